"""align3gr: LLM fine-tuning for generative recommendation (Align3GR end to end)."""

__version__ = "0.1.0"
