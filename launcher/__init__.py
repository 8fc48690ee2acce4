"""launcher: fine-tune Hugging Face models with Lightning on Ray Train, search with Ray Tune."""

__version__ = "0.1.0"
