"""One Ray Train run, both sides.

Driver: prepare.py (checks, then read and tokenise once), fit.py (run the workers, collect the
history). Workers: loop.py (the training loop), callbacks.py (report, progress, NaN guard),
resume.py (exact mid-epoch resume), hyperparams.py (a search's copied trial). Shared: scoring.py
(the one rule that ranks results).
"""
