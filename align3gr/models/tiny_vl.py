"""A tiny Qwen2.5-VL (vision tower included) created from a config, with a tokenizer trained on the dataset's own
text and a Qwen2-VL image processor, saved as an ordinary model folder: the embedded default of UniSID's backbone.

Loaded back with `from_pretrained` (`Qwen2_5_VLForConditionalGeneration`, `AutoTokenizer`, `AutoImageProcessor`)
exactly as Qwen2.5-VL-3B would be. Same texts and seed give identical files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from align3gr.io import atomic_directory
from align3gr.models.tiny import train_tokenizer
from align3gr.seeding import seeded

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
PATCH, MERGE, TEMPORAL = 14, 2, 2


def mrope_section(head_dim: int) -> list[int]:
    """Qwen2.5-VL's split of the rotary half-dimension into temporal, height and width parts ([16, 24, 24] at
    head_dim 128), scaled to `head_dim`."""
    half = head_dim // 2
    temporal = half // 4
    rest = half - temporal
    return [temporal, rest // 2, rest - rest // 2]


def build_tiny_qwen2_5_vl(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 4096,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_depth: int = 1,
    num_heads: int = 4,
    max_positions: int = 2048,
    seed: int = 0,
) -> Path:
    """Train the tokenizer on `texts` (plus Qwen's vision tokens), create a seeded Qwen2_5_VLForConditionalGeneration
    with a `vision_depth`-block vision tower, and save it with its tokenizer and image processor to `out_dir`."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = train_tokenizer(texts, vocab_size, max_positions)
    tokenizer.add_tokens(list(VISION_TOKENS), special_tokens=True)
    ids = dict(zip(VISION_TOKENS, tokenizer.convert_tokens_to_ids(list(VISION_TOKENS)), strict=True))
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=(PATCH * MERGE) ** 2, max_pixels=(4 * PATCH * MERGE) ** 2, patch_size=PATCH, merge_size=MERGE,
        temporal_patch_size=TEMPORAL,
    )  # fmt: skip
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 4 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_heads,
            "max_position_embeddings": max_positions,
            "rope_parameters": {
                "rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section(hidden_size // num_heads)
            },
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": TEMPORAL,
            "window_size": 4 * PATCH * MERGE,
            "fullatt_block_indexes": [vision_depth - 1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )  # fmt: skip
    with seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(config)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
    return out_dir
