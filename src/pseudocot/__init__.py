"""pseudocot: Pseudo Chain-of-Thought induced fine-tuning for small self-hosted LLMs."""

__version__ = "0.1.0"
