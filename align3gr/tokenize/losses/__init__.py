"""Losses of the tokenizer: the U2I behaviour loss (Align3GR Eq. 1) and the optional regularisers."""
