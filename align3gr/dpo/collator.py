"""Batches of Softmax-DPO rows in the layout both forwards share: the prompt once, then 1 + K completions.

Rows hold token IDs: `prompt_ids` (list), `chosen_ids` (list) and `rejected_ids` (a list of K lists), and
optionally precomputed reference log-probabilities `ref_chosen_logps` (float) and `ref_rejected_logps` (K floats).
Prompts are left-padded and completions right-padded, so every completion starts at the same column: the plain
forward projects only those columns onto the vocabulary, and the shared-prompt forward appends them to the
prompt's KV cache. Rows with fewer rejected completions than the batch's largest K (or than `width`) are padded with
empty completions that `rejected_mask` marks as absent; a row's stored reference log-probabilities are read for its
own completions only, so they may have been computed in a wider batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def pad_rows(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    """[N, max length] tensor of `rows`, padded with `value` on the `side` ("left" or "right")."""
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            if side == "left":
                out[index, width - len(row) :] = torch.tensor(row)
            else:
                out[index, : len(row)] = torch.tensor(row)
    return out


@dataclass
class SoftmaxPreferenceCollator:
    """Collate rows into `prompt_ids` [B, P], `prompt_attention_mask` [B, P], `completion_ids` [B, 1 + K, C]
    (index 0 is the chosen completion), `completion_attention_mask` [B, 1 + K, C], `rejected_mask` [B, K] and,
    when the rows have them, `ref_chosen_logps` [B] and `ref_rejected_logps` [B, K]. K is the batch's largest
    rejected count, at least `width`."""

    pad_token_id: int
    width: int = 0

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        width = max(self.width, *(len(r["rejected_ids"]) for r in rows))
        completions: list[list[int]] = []
        for row in rows:
            rejected = [list(c) for c in row["rejected_ids"]]
            completions += [list(row["chosen_ids"]), *rejected, *([[]] * (width - len(rejected)))]
        prompts = [list(r["prompt_ids"]) for r in rows]
        completion_ids = pad_rows(completions, self.pad_token_id, "right")
        completion_mask = pad_rows([[1] * len(c) for c in completions], 0, "right")
        batch = {
            "prompt_ids": pad_rows(prompts, self.pad_token_id, "left"),
            "prompt_attention_mask": pad_rows([[1] * len(p) for p in prompts], 0, "left"),
            "completion_ids": completion_ids.view(len(rows), width + 1, -1),
            "completion_attention_mask": completion_mask.view(len(rows), width + 1, -1),
            "rejected_mask": torch.tensor([[k < len(r["rejected_ids"]) for k in range(width)] for r in rows]),
        }
        if "ref_chosen_logps" in rows[0]:
            batch["ref_chosen_logps"] = torch.tensor([float(r["ref_chosen_logps"]) for r in rows])
            own = [list(r["ref_rejected_logps"])[: len(r["rejected_ids"])] for r in rows]
            batch["ref_rejected_logps"] = torch.tensor([logps + [0.0] * (width - len(logps)) for logps in own])
        return batch
