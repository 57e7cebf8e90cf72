"""align3gr: LLM fine-tuning for generative recommendation (Align3GR end to end)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`align3gr.load_recommender`, imported on first use so `import align3gr` stays light."""
    if name == "load_recommender":
        from align3gr.hub.recommender import load_recommender

        return load_recommender
    raise AttributeError(f"module 'align3gr' has no attribute {name!r}")
