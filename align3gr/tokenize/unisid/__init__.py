"""UniSID: the end-to-end multimodal item tokenizer on a Qwen2.5-VL backbone, an alternative to the dual
RQ-VAE item tokenizer that writes the same `scid/item_codes.json`."""
