"""`SCIDSFTTrainer`: TRL's SFTTrainer with the loss taken through the model's own output layer.

TRL computes the SFT loss with a fused LM head that reads `lm_head.weight` (and `.bias`) directly. Under LoRA with
peft's trainable tokens, the output layer is a wrapper whose new SCID rows live in the adapter, not in that weight,
so the fused loss would never see or train them (and the wrapper has no `bias`). The Transformers loss calls the
output module, which applies the adapter's rows; that is the only change.

The fused head also only pays for large vocabularies: it projects through a `[4096, 32768]` float32 tile (512 MB)
allocated on every forward and backward, whatever the vocabulary; below 32,768 output rows the full logits are
smaller than that tile, and the model's own loss is several times faster (the tiny default: 2.6x per SFT run).
"""

from __future__ import annotations

from transformers import Trainer
from trl import SFTTrainer

FUSED_HEAD_TILE = 32768
"""Vocabulary columns of TRL's fused LM-head tile (`trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE`)."""


def needs_model_loss(model, use_lora: bool) -> bool:
    """Whether SFT must (LoRA trainable tokens) or should (a vocabulary smaller than the fused tile) take the loss
    through the model's output layer."""
    return use_lora or model.get_output_embeddings().weight.shape[0] < FUSED_HEAD_TILE


class SCIDSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss calls the output layer module, so trainable-token rows on the head are trained."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
