"""dialogtune: fine-tune, evaluate and serve language models for dialogue summarization."""

__version__ = "0.1.0"
