"""launcher.search.trial: a failed trial's error line names the cause."""

from __future__ import annotations



def test_error_line_finds_the_cause():
    from launcher.errors import NonFiniteLoss
    from launcher.search.trial import error_line

    assert error_line(NonFiniteLoss("loss is nan at step 3 (epoch 1, batch 4): lower optim.lr")).startswith(
        "NonFiniteLoss: loss is nan at step 3")
    wrapped = RuntimeError("Training failed.\nTraceback (most recent call last):\n  File x\nValueError: bad shape (3, 4)")
    assert error_line(wrapped) == "ValueError: bad shape (3, 4)"
