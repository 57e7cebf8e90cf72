"""The `tokenize` stage: the dual SCID tokenizer (seed 003 Eq. 1-2) turning users and items into short codes."""
