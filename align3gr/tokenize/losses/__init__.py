"""Losses of the tokenizer: the U2I behaviour loss (seed 003 Eq. 1) and the optional regularisers."""
