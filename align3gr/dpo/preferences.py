"""Preference data of the progressive DPO stages (seed 003, "Preference-level Alignment", Table 5).

Every row is a user's history, one chosen item and up to K rejected items (never the chosen one):

- self-play (SP-DPO): chosen = the ground-truth next item of a training prompt; rejected = items the current
  policy generated for that prompt (constrained beam search), kept in beam order when their prefix-ngram
  bucket (`buckets.py`) is the stage's. A stage may also take the generated items at random ("random": plain
  Softmax-DPO of Table 5) or a third from each bucket ("mixed": SP-DPO without progression).
- real feedback (RF-DPO): chosen = a training item the user liked; rejected = the user's training items at the
  stage's feedback level (easy: disliked, hard: neutral), never valid or test targets.

Filling a short self-play bucket: when the policy generated fewer than K items of the stage's bucket, the rest are
drawn at random from the catalogue among items in the same bucket for that target (same shared-prefix range, or
same similarity band), so difficulty is kept; the row holds fewer than K when the catalogue has no more. RF rows
hold what the user's feedback has (at most K, the most recent first). Rows with no rejected item are dropped and
counted.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from align3gr.data.dataset import Dataset
from align3gr.dpo.buckets import BUCKETS, Buckets
from align3gr.errors import ConfigError

SELF_PLAY_KINDS = (*BUCKETS, "random", "mixed")
FEEDBACK_KINDS = {"disliked": ("disliked",), "neutral": ("neutral",), "negative": ("disliked", "neutral")}


@dataclass
class PreferenceExample:
    """One row before rendering: `generated` counts the rejected items that came from the policy, `filled` those
    drawn from the catalogue to fill a short bucket."""

    user_id: str
    history: tuple[str, ...]
    chosen: str
    rejected: list[str]
    generated: int = 0
    filled: int = 0


@dataclass
class PreferenceStats:
    """What a stage's data holds: rows, rejected items per row, how many came from the policy or the fill."""

    rows: int = 0
    dropped: int = 0
    rejected: int = 0
    generated: int = 0
    filled: int = 0
    short_rows: int = 0

    def record(self, example: PreferenceExample, wanted: int) -> bool:
        """Count `example`, a row that should hold `wanted` rejected items; False (dropped) when it holds none."""
        if not example.rejected:
            self.dropped += 1
            return False
        self.rows += 1
        self.rejected += len(example.rejected)
        self.generated += example.generated
        self.filled += example.filled
        self.short_rows += len(example.rejected) < wanted
        return True

    def as_dict(self) -> dict[str, float | int]:
        return {
            "rows": self.rows,
            "dropped_rows": self.dropped,
            "rejected_per_row": self.rejected / max(1, self.rows),
            "generated_share": self.generated / max(1, self.rejected),
            "filled": self.filled,
            "short_rows": self.short_rows,
        }


def self_play_examples(
    prompts: Sequence[tuple[str, tuple[str, ...], str]],
    generated: Sequence[Sequence[str]],
    buckets: Buckets,
    kind: str,
    num_rejected: int,
    seed: int,
) -> tuple[list[PreferenceExample], PreferenceStats]:
    """SP-DPO rows: `prompts` are (user, history, ground-truth item), `generated` the policy's items for each, best
    first, `buckets` the difficulty of a candidate for a target (prefix-ngram or SCID-vector similarity). `kind`
    is a bucket, "random" or "mixed" (see the module docstring)."""
    if kind not in SELF_PLAY_KINDS:
        raise ConfigError(f"unknown self-play stage kind {kind!r}; expected one of {', '.join(SELF_PLAY_KINDS)}")
    rng = random.Random(f"{seed}:sp:{kind}")
    examples, stats = [], PreferenceStats()
    for (user, history, target), candidates in zip(prompts, generated, strict=True):
        others = [c for c in dict.fromkeys(candidates) if c != target]
        if kind == "random":
            picked = rng.sample(others, min(num_rejected, len(others)))
            generated_count = len(picked)
            picked += buckets.fill(target, None, num_rejected - len(picked), set(picked), rng)
        else:
            names = BUCKETS if kind == "mixed" else (kind,)
            shares = [num_rejected // len(names) + (i < num_rejected % len(names)) for i in range(len(names))]
            picked, generated_count = [], 0
            for bucket, share in zip(names, shares, strict=True):
                own = [c for c in others if buckets.bucket(c, target) == bucket][:share]
                generated_count += len(own)
                picked += own + buckets.fill(target, bucket, share - len(own), set(picked) | set(own), rng)
        example = PreferenceExample(user, history, target, picked, generated_count, len(picked) - generated_count)
        if stats.record(example, num_rejected):
            examples.append(example)
    return examples, stats


def real_feedback_examples(
    dataset: Dataset, kind: str, num_rejected: int, prompts_per_user: int
) -> tuple[list[PreferenceExample], PreferenceStats]:
    """RF-DPO rows from the train split: for up to `prompts_per_user` liked training items per user (the most
    recent ones, each with a non-empty history), the items of the user's training part at the `kind` level."""
    if kind not in FEEDBACK_KINDS:
        raise ConfigError(f"unknown feedback stage kind {kind!r}; expected one of {', '.join(FEEDBACK_KINDS)}")
    levels = FEEDBACK_KINDS[kind]
    limit = dataset.max_history
    examples, stats = [], PreferenceStats()
    missing = 0
    for user, seq in dataset.sequences.items():
        if seq.feedback is None:
            missing += 1
            continue
        train = seq.items[:-2]
        feedback = seq.feedback[: len(train)]
        negatives = [item for item, level in zip(train, feedback, strict=True) if level in levels][::-1]
        liked = [t for t in range(1, len(train)) if feedback[t] == "liked"][::-1][:prompts_per_user]
        for t in liked:
            rejected = [item for item in negatives if item != train[t]][:num_rejected]
            example = PreferenceExample(user, tuple(train[max(0, t - limit) : t]), train[t], rejected)
            if stats.record(example, num_rejected):
                examples.append(example)
    if missing == len(dataset.sequences):
        raise ConfigError("RF-DPO needs feedback levels, and the dataset has none (no ratings or reviews)")
    return examples, stats
