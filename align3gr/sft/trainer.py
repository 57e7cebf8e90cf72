"""`SCIDSFTTrainer`: TRL's SFTTrainer with the loss taken through the model's own output layer.

TRL computes the SFT loss with a fused LM head that reads `lm_head.weight` (and `.bias`) directly. Under LoRA with
peft's trainable tokens, the output layer is a wrapper whose new SCID rows live in the adapter, not in that weight,
so the fused loss would never see or train them (and the wrapper has no `bias`). The Transformers loss calls the
output module, which applies the adapter's rows; that is the only change.
"""

from __future__ import annotations

from transformers import Trainer
from trl import SFTTrainer


class SCIDSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss calls the output layer module, so trainable-token rows on the head are trained."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
