"""Unconstrained greedy generation of text answers (next item title, preference statement), to read what the model
says; with the same neutralised settings as ranking, so `generation_config.json` does not change the output."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from align3gr.decode.base import left_pad
from align3gr.decode.processor import neutral_generation_defaults, ranking_generation_config
from align3gr.models.loading import pad_token_id


@torch.inference_mode()
def generate_text(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int = 48) -> list[str]:
    """Greedy completion of each prompt (token IDs), decoded without special tokens, stopping at EOS."""
    pad = pad_token_id(tokenizer)
    config = ranking_generation_config(
        1, max_new_tokens, tokenizer.eos_token_id, pad, min_new_tokens=0, num_return_sequences=1, output_scores=False
    )
    ids, mask = left_pad(prompts, pad, model.device)
    with neutral_generation_defaults(model):
        output = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    return [
        text.strip() for text in tokenizer.batch_decode(output.sequences[:, ids.shape[1] :], skip_special_tokens=True)
    ]
