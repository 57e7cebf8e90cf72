"""The LoRA adapter of the `sft` stage: low-rank updates plus trained rows for the new SCID tokens.

LoRA alone would leave the added tokens at their initial rows. peft's `trainable_token_indices` trains exactly those
rows of the input embedding and, for an untied output head, of `lm_head` too (a tied head shares the embedding's
trained rows); the adapter file stores them, so the rest of both matrices stays the base model's.
"""

from __future__ import annotations

from collections.abc import Sequence

from align3gr.models.lora import module_name


def scid_lora_config(model, token_ids: Sequence[int], r: int, alpha: int, dropout: float, targets: Sequence[str]):
    """A causal-LM LoraConfig on `targets` whose trainable tokens are `token_ids` on both embedding sides."""
    from peft import LoraConfig

    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    indices = {module_name(model, embedding): list(token_ids)}
    if head is not None and head.weight is not embedding.weight:
        indices[module_name(model, head)] = list(token_ids)
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        task_type="CAUSAL_LM",
        trainable_token_indices=indices,
    )
