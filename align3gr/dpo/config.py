"""Options of the `dpo` stage: which progressive stages run (Align3GR Table 5 variants), their data and the
optimiser."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from align3gr.config import OMITTED
from align3gr.dpo.checks import (
    RF_FILLS,
    SHARED_PROMPT_FORWARDS,
    SP_FILLS,
    check_prefix_thresholds,
    check_similarity_shares,
)
from align3gr.errors import ConfigError, check_numbers
from align3gr.evaluate.config import EvaluateConfig
from align3gr.options import TrainingOptions, with_default
from align3gr.training_args import TRAINING_FIXED, TRAINING_REFUSED, TRAINING_RENAMED, TrainerArgs

STAGES: dict[str, tuple[str, str]] = {
    "sp_easy": ("self_play", "easy"),
    "sp_medium": ("self_play", "medium"),
    "sp_hard": ("self_play", "hard"),
    "sp_mixed": ("self_play", "mixed"),
    "sp_random": ("self_play", "random"),
    "rf_easy": ("real_feedback", "disliked"),
    "rf_hard": ("real_feedback", "neutral"),
    "rf_mixed": ("real_feedback", "negative"),
}
"""Stage name -> (source of the rejected items, kind). Align3GR Table 5: Softmax-DPO = [sp_random]; SP-DPO without
progression = [sp_mixed], with = [sp_easy, sp_medium, sp_hard]; RF-DPO without progression = [rf_mixed], with =
[rf_easy, rf_hard]; Align3GR runs the progressive SP stages, then the progressive RF stages."""

BUCKETINGS = ("prefix", "similarity")
PROGRESSIVE = ["sp_easy", "sp_medium", "sp_hard", "rf_easy", "rf_hard"]

SOFTMAX_DPO = "the loss is Eq. 3 (Align3GR's Softmax-DPO)"
LOSS_OPTIONS = {
    "loss_type": "the loss is Eq. 3, TRL's sigmoid loss when K = 1",
    "loss_weights": f"{SOFTMAX_DPO} alone, no mix of TRL's losses",
    "label_smoothing": f"{SOFTMAX_DPO}, which has no label smoothing (TRL's robust and EXO losses)",
    "f_divergence_type": f"{SOFTMAX_DPO}, whose divergence is standard DPO's reverse KL",
    "f_alpha_divergence_coef": f"{SOFTMAX_DPO}, whose divergence is standard DPO's reverse KL",
    "ld_alpha": f"{SOFTMAX_DPO} of whole-completion log-probabilities, without LD-DPO's length weighting",
    "use_weighting": f"{SOFTMAX_DPO}, every row weighted alike, without WPO's weights",
    "discopop_tau": f"{SOFTMAX_DPO}, not TRL's DiscoPOP loss",
    "router_aux_loss_coef": f"{SOFTMAX_DPO} plus sft_weight's term, without a mixture-of-experts load-balancing loss",
    "label_smoothing_factor": f"{SOFTMAX_DPO}, which has no label smoothing",
}
"""TRL's `DPOConfig` options of its other losses, which `SoftmaxDPOTrainer` never reads, and why."""
COLLATION_OPTIONS = dict.fromkeys(
    ("max_length", "truncation_mode", "padding_free"),
    "the trainer collates whole prompts and completions itself (no input_ids): TRL's truncation and padding never "
    "apply",
)
"""TRL's `DPOConfig` options of its tokenizing and collating, which `SoftmaxDPOTrainer` never reads either (and
`pad_to_multiple_of`, whose default TRL resolves, so that only the stage config refuses it)."""

EVALUATION_OPTIONS = dict.fromkeys(
    ("eval_strategy", "eval_steps", "eval_delay", "eval_on_start", "load_best_model_at_end", "metric_for_best_model",
     "greater_is_better", "per_device_eval_batch_size", "eval_accumulation_steps", "batch_eval_metrics",
     "eval_do_concat_batches", "eval_use_gather_object", "bf16_full_eval", "fp16_full_eval", "prediction_loss_only",
     "include_for_metrics"),
    "a DPO stage has no eval set; the valid guard selects after it",
)  # fmt: skip
"""The Trainer's evaluation and best-checkpoint options: a stage trains without an eval set, and the valid-split check
after it (with `guard` on, the guard) does the selecting."""


@dataclass
class SoftmaxDPOOptions:
    """The Softmax-DPO options of both the stage's config and the trainer's (`SoftmaxDPOConfig`), declared and
    validated once."""

    shared_prompt_forward: str = field(
        default="packed",
        metadata={
            "help": "How the 1 + K completions of a prompt are scored: 'packed' (the prompt once, completions packed "
            "after it under a 4D mask), 'cache' (the prompt once, its KV cache repeated; needs gradient "
            "checkpointing off) or 'plain' (1 + K full sequences).",
            "choices": SHARED_PROMPT_FORWARDS,
        },
    )
    sft_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the chosen completion's negative log-likelihood added to Eq. 3, which keeps the chosen "
            "item's likelihood from falling with the rejected ones; 0: Eq. 3 alone."
        },
    )

    def validate(self) -> None:
        if self.shared_prompt_forward not in SHARED_PROMPT_FORWARDS:
            raise ConfigError(
                f"shared_prompt_forward={self.shared_prompt_forward!r}: expected one of "
                f"{', '.join(SHARED_PROMPT_FORWARDS)}"
            )
        check_numbers(self, ("sft_weight",))


@dataclass
class DPOStageConfig(TrainingOptions, SoftmaxDPOOptions):
    """Progressive Softmax-DPO (Align3GR Eq. 3): each stage trains from the previous one, which is its reference.
    Its trainer options are `TrainingOptions` (DPO's own defaults for the learning rate, warm-up, batch size and
    checkpoint interval) and `SoftmaxDPOOptions`; the valid-split check after each stage takes the `evaluate`
    section's options (`valid_evaluation`)."""

    section = "dpo"
    trainer_args = TrainerArgs(
        "align3gr.dpo.trainer:SoftmaxDPOConfig",
        fixed=TRAINING_FIXED,
        refused={
            **TRAINING_REFUSED,
            **LOSS_OPTIONS,
            **dict.fromkeys(
                (
                    *COLLATION_OPTIONS,
                    "pad_to_multiple_of",
                    "pad_token",
                    "dataset_num_proc",
                    "train_sampling_strategy",
                ),
                "the stage prepares and collates its own rows, whole prompts and completions, without input_ids: "
                "TRL's preparing, batching and length-grouped sampling never apply",
            ),  # fmt: skip
            "model_init_kwargs": "the stage loads its start model itself",
            **dict.fromkeys(
                ("sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps"),
                "each stage's reference is the model it starts from, fixed (Align3GR's progressive DPO)",
            ),
            **EVALUATION_OPTIONS,
        },
        renamed=TRAINING_RENAMED,
    )

    learning_rate: float = with_default(TrainingOptions, "learning_rate", 1e-5)
    warmup_steps: float = with_default(TrainingOptions, "warmup_steps", 0.0)
    per_device_train_batch_size: int = with_default(TrainingOptions, "per_device_train_batch_size", 4)
    save_steps: int = with_default(TrainingOptions, "save_steps", 200)
    stages: list[str] = field(
        default_factory=lambda: list(PROGRESSIVE),
        metadata={"help": "Stages in order, each from the one before.", "choices": tuple(STAGES)},
    )
    beta: float = field(default=0.1, metadata={"help": "beta of Eq. 3."})
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Run model code shipped with the start model or its base (a pipeline sets it as sft's).",
            "fingerprint": OMITTED,
        },
    )
    num_rejected: int = field(default=20, metadata={"help": "Rejected completions per row (paper: 20)."})
    prompts_per_user: int = field(
        default=1, metadata={"help": "Training prompts per user: the most recent (self-play) or liked items (RF)."}
    )
    candidates: int = field(
        default=50,
        metadata={
            "help": "Beam width of the policy's candidates for a prompt (self-play and RF stages); wider than "
            "num_rejected, so that a stage's bucket or feedback level finds enough of the policy's own items."
        },
    )
    sp_fill: str = field(
        default="none",
        metadata={
            "help": "Self-play rows with fewer than num_rejected generated items of the stage's bucket: 'none' keeps "
            "them short (Align3GR: rejected items are the policy's own generations; Eq. 3 runs over the row's own "
            "items) or 'catalogue' pads them with random catalogue items of the same bucket.",
            "choices": SP_FILLS,
        },
    )
    rf_fill: str = field(
        default="logged",
        metadata={
            "help": "RF-DPO rejects the policy's candidates that the user logged at the stage's feedback level (rating "
            "or review sentiment, data thresholds disliked_max / liked_min) before the chosen item, standing in for "
            "feedback on shown recommendations. Rows with fewer: 'logged' adds the user's other items logged at that "
            "level before the chosen one, most recent first; 'none' keeps them short.",
            "choices": RF_FILLS,
        },
    )
    bucketing: str = field(
        default="prefix",
        metadata={
            "help": "Self-play difficulty: 'prefix' (prefix-ngram match) or 'similarity' (SCID vectors).",
            "choices": BUCKETINGS,
        },
    )
    medium_min: int = field(default=1, metadata={"help": "prefix: shared leading codes from which it is medium."})
    hard_min: int = field(default=2, metadata={"help": "prefix: shared leading codes from which it is hard."})
    hard_share: float = field(default=0.01, metadata={"help": "similarity: most similar share of items that is hard."})
    medium_share: float = field(default=0.1, metadata={"help": "similarity: next most similar share, medium."})
    similarity_sample: int = field(
        default=4096,
        metadata={
            "help": "similarity: on catalogues with more items than this, each target's share edges are estimated "
            "from this many random items, so a stage costs time linear in its rows, not rows x items; 0 ranks the "
            "whole catalogue for every target (exact, quadratic)."
        },
    )
    precompute_ref_log_probs: bool = field(
        default=False, metadata={"help": "Score the reference once before training instead of at every step."}
    )
    guard: bool = field(
        default=False,
        metadata={
            "help": "Hand on a stage's trained model only when none of guard_metrics falls on the valid split below "
            "the model the stage started from; otherwise the stage's folder holds that start model again (its "
            "meta.json records both evaluations). Model selection on valid, as SFT's best checkpoint; off: Eq. 3's "
            "chain as the paper runs it."
        },
    )
    guard_metrics: list[str] = field(
        default_factory=lambda: ["recall@10", "ndcg@10"],
        metadata={"help": "Valid metrics a stage must not lower to be kept (with guard on)."},
    )
    generation_batch_size: int = field(
        default=16, metadata={"help": "Prompts decoded together when the policy generates its candidates."}
    )

    def validate(self) -> None:
        TrainingOptions.validate(self)
        SoftmaxDPOOptions.validate(self)
        if not self.stages:
            raise ConfigError(f"stages is empty: choose from {', '.join(STAGES)}")
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown DPO stage {unknown[0]!r}; known stages: {', '.join(STAGES)}")
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"stages {self.stages}: a stage name may appear once")
        for name in ("num_rejected", "prompts_per_user", "candidates", "generation_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.similarity_sample < 0:
            raise ConfigError(f"similarity_sample={self.similarity_sample}: must be >= 0 (0: the whole catalogue)")
        if self.bucketing not in BUCKETINGS:
            raise ConfigError(f"bucketing={self.bucketing!r}: expected one of {', '.join(BUCKETINGS)}")
        if self.sp_fill not in SP_FILLS:
            raise ConfigError(f"sp_fill={self.sp_fill!r}: expected one of {', '.join(SP_FILLS)}")
        if self.rf_fill not in RF_FILLS:
            raise ConfigError(f"rf_fill={self.rf_fill!r}: expected one of {', '.join(RF_FILLS)}")
        self_play = any(STAGES[s][0] == "self_play" for s in self.stages)
        if self_play and self.sp_fill == "none" and self.candidates < self.num_rejected:
            raise ConfigError(
                f"candidates={self.candidates} < num_rejected={self.num_rejected}: with sp_fill='none' the rejected "
                "items are the policy's generations only, so the beam must be at least num_rejected wide (wider "
                "still to fill the buckets); widen it or set sp_fill='catalogue'"
            )
        check_numbers(self, ("beta",), positive=True)
        if self.shared_prompt_forward == "cache" and self.gradient_checkpointing:
            raise ConfigError(
                "shared_prompt_forward='cache' repeats the prompt's KV cache, which gradient checkpointing cannot "
                "recompute: set gradient_checkpointing off, or shared_prompt_forward to 'packed'"
            )
        check_prefix_thresholds(self.medium_min, self.hard_min)
        check_similarity_shares(self.medium_share, self.hard_share)
        if self.guard and not self.guard_metrics:
            raise ConfigError(
                "guard_metrics=[]: with guard on, name at least one valid metric (recall@K or ndcg@K) a stage must "
                "not lower"
            )
        check_guard_metrics(self.guard_metrics)

    def check_code_length(self, levels: int, source: str) -> None:
        """The prefix thresholds against the SCIDs' length `levels` (of the code table `source`) when a self-play
        stage buckets by prefix, so a bad pair stops the run before any candidate generation."""
        if self.bucketing == "prefix" and any(STAGES[s][0] == "self_play" for s in self.stages):
            check_prefix_thresholds(self.medium_min, self.hard_min, levels, source)

    def valid_evaluation(self, evaluate: EvaluateConfig) -> EvaluateConfig:
        """The check after each stage: the `evaluate` options (the pipeline's section) on the valid split, whose
        cut-offs must give the guard its metrics; a ranking only (no generated texts), so the options of the texts
        are left out of what the stage depends on."""
        if self.guard:
            check_guard_metrics(self.guard_metrics, evaluate.ks)
        texts = {
            name: EvaluateConfig.__dataclass_fields__[name].default for name in ("text_examples", "max_new_tokens")
        }
        return dataclasses.replace(evaluate, split="valid", **texts)


def check_guard_metrics(metrics: list[str], ks: list[int] | None = None) -> None:
    """Each guard metric is recall@K or ndcg@K as the evaluation names its metrics (K >= 1 in ASCII digits, no
    leading zero), with K among the valid evaluation's cut-offs `ks` when they are known (the `evaluate` section is
    read apart from the `dpo` one)."""
    for metric in metrics:
        name, _, k = metric.partition("@")
        named = name in ("recall", "ndcg") and k.isascii() and k.isdigit() and metric == f"{name}@{int(k)}"
        if not named or int(k) < 1 or (ks is not None and int(k) not in ks):
            among = f" with K in {ks}" if ks is not None else ", K a whole number >= 1 in ASCII digits"
            raise ConfigError(
                f"guard_metrics: {metric!r} is not a valid-split metric; expected recall@K or ndcg@K{among}"
            )
