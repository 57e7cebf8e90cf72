"""The `tokenize` stage: the dual SCID tokenizer (Align3GR Eq. 1-2) turning users and items into short codes."""
