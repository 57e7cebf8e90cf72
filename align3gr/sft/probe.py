"""Beam-search Recall/NDCG on a fixed sample of valid users while a model trains: what SFT selects its best
checkpoint and stops early by (the full evaluation stays the `evaluate` stage's job).

The probe is built once (prompts, targets, histories to exclude) and called with the model at each evaluation; it
decodes exactly as `align3gr evaluate` does, sharded across the processes of an `accelerate launch`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from align3gr.decode.sharded import rank_catalogue
from align3gr.metrics import Prediction, compute_metrics
from align3gr.sft.config import PROBE_KS
from align3gr.sft.tasks import TaskBuilder


@dataclass
class RankingProbe:
    """Prompts of a seeded sample of valid users, their targets and the items each must not be recommended."""

    builder: TaskBuilder
    tokenizer: object
    prompts: list[list[int]]
    targets: list[str]
    exclude: list[list[str]] | None
    beam_size: int
    batch_size: int
    ks: Sequence[int] = PROBE_KS

    @classmethod
    def of_valid(
        cls, builder: TaskBuilder, tokenizer, users: int, beam_size: int, batch_size: int, seed: int, exclude: bool
    ) -> RankingProbe:
        """A probe of `users` valid users drawn with `seed` (all of them when there are fewer)."""
        examples = builder.dataset.examples("valid")
        if users < len(examples):
            examples = sorted(random.Random(seed).sample(examples, users), key=lambda ex: ex.user_id)
        prompts = [builder.seq_prompt_ids(tokenizer, ex.user_id, ex.history) for ex in examples]
        seen = [builder.dataset.seen_before(ex.user_id, "valid") for ex in examples] if exclude else None
        targets = [ex.target for ex in examples]
        return cls(builder, tokenizer, prompts, targets, seen, beam_size, batch_size)

    def __call__(self, model) -> dict[str, float]:
        """`recall@K` and `ndcg@K` of `model` on the sample (the model is put back in the mode it was in)."""
        ranked = rank_catalogue(
            model, self.tokenizer, self.builder.item_codes, self.prompts, "valid ranking", "user",
            beam_size=self.beam_size, batch_size=self.batch_size, exclude=self.exclude,
        )  # fmt: skip
        predictions = [
            Prediction("", target, r.items, r.scores, r.returned, r.valid)
            for target, r in zip(self.targets, ranked, strict=True)
        ]
        metrics = compute_metrics(predictions, self.ks, len(self.builder.item_codes))
        return {k: v for k, v in metrics.items() if k.startswith(("recall@", "ndcg@"))}
