"""Loading and creating the language models the stages use."""

DTYPES = ("auto", "float32", "bfloat16", "float16")
"""The weight dtypes the options accept, by name (`align3gr.models.loading.resolve_dtype` gives the torch dtype); named
here so that listing the options does not import torch."""
