"""Data: files and their checks (files.py, cheap readers in counting.py), and the samplers and step
arithmetic of the workers (sampling.py)."""
