"""Options of the `data` stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from align3gr.config import OMITTED_WHEN_UNSET
from align3gr.errors import ConfigError
from align3gr.models.local import require_model_folder

MISSING_METADATA = ("error", "drop")
PACKAGED_SOURCE = "recbole"
"""The default `source`: the MovieLens-100K copy inside the installed `recbole` package, for builder `movielens` (a
folder of that name in the working folder is read instead)."""
TEXT_GENERATORS = ("template", "llm")


@dataclass
class SourceConfig:
    """Where the raw data is and which builder reads it."""

    section = "source"

    builder: str = field(
        default="movielens", metadata={"help": "Raw format: movielens, amazon, yelp, lcrec, or a registered one."}
    )
    source: str = field(default=PACKAGED_SOURCE, metadata={"help": "Raw files: a folder, a file, or 'recbole'."})
    options: dict[str, str] = field(default_factory=dict, metadata={"help": "Builder-specific options."})


@dataclass
class DataConfig:
    """How raw interactions become the canonical dataset (filters, feedback levels, task texts)."""

    section = "data"

    user_k: int = field(default=5, metadata={"help": "k-core: keep users with at least this many interactions (>= 3)."})
    item_k: int = field(default=5, metadata={"help": "k-core: keep items with at least this many interactions."})
    max_history: int = field(default=20, metadata={"help": "Histories are cut to this many most recent items."})
    max_users: int | None = field(
        default=None,
        metadata={"help": "Keep a seeded sample of this many users after k-core, and the items they touched (a slice "
                  "for quick runs); unset: every user."},
    )  # fmt: skip
    missing_metadata: str | None = field(
        default=None,
        metadata={
            "help": "Interactions whose item has no metadata: 'error' or 'drop' (default: the builder's).",
            "choices": MISSING_METADATA,
        },
    )
    disliked_max: float = field(default=1.0, metadata={"help": "Ratings <= this are 'disliked' feedback."})
    liked_min: float = field(default=4.0, metadata={"help": "Ratings >= this are 'liked'; in between is 'neutral'."})
    sentiment_model: str | None = field(
        default=None,
        metadata={"help": "Local Hugging Face text-classification model that scores review text into feedback levels."},
    )
    text_generator: str = field(
        default="template",
        metadata={
            "help": "Profiles, intention queries and preference statements: 'template' or 'llm'.",
            "choices": TEXT_GENERATORS,
        },
    )
    text_model: str | None = field(default=None, metadata={"help": "Local causal LM folder for text_generator=llm."})
    text_cache: str | None = field(
        default=None,
        metadata={
            "help": "Cache folder for LLM-written texts (default texts/ under $ALIGN3GR_CACHE or ~/.cache/align3gr).",
            "fingerprint": None,  # where texts are cached, not what they are: fingerprints record the default
        },
    )
    text_max_new_tokens: int = field(default=64, metadata={"help": "Length limit of each LLM-written text."})
    intentions_per_user: int | None = field(
        default=None,
        metadata={
            "help": "Write task C2's intentions for at most this many training targets per user (a seeded choice); "
            "unset: one per training target. With text_generator=llm each is one LLM generation, so large "
            "catalogues want a cap (the default recipe's SFT samples 300 intentions in all).",
            "fingerprint": OMITTED_WHEN_UNSET,
        },
    )
    seed: int = field(
        default=0,
        metadata={"help": "Seed of every random choice (template paraphrases, the max_users and intentions samples)."},
    )

    def validate(self) -> None:
        if self.user_k < 3:
            raise ConfigError(f"user_k={self.user_k}: leave-one-out needs user_k >= 3")
        if self.item_k < 1:
            raise ConfigError(f"item_k={self.item_k}: must be >= 1")
        if self.max_history < 1:
            raise ConfigError(f"max_history={self.max_history}: must be >= 1")
        if self.max_users is not None and self.max_users < 1:
            raise ConfigError(f"max_users={self.max_users}: must be >= 1 (or unset for every user)")
        if self.missing_metadata not in (None, *MISSING_METADATA):
            raise ConfigError(f"missing_metadata={self.missing_metadata!r}: expected 'error' or 'drop'")
        if not self.disliked_max < self.liked_min:
            raise ConfigError(f"disliked_max={self.disliked_max} must be below liked_min={self.liked_min}")
        if self.intentions_per_user is not None and self.intentions_per_user < 1:
            raise ConfigError(f"intentions_per_user={self.intentions_per_user}: must be >= 1 (unset: every target)")
        if self.text_generator not in TEXT_GENERATORS:
            raise ConfigError(f"text_generator={self.text_generator!r}: expected 'template' or 'llm'")
        if self.text_generator == "llm" and not self.text_model:
            raise ConfigError("text_generator='llm' needs text_model (a local causal LM folder)")
        if self.text_generator == "llm":
            require_model_folder(self.text_model, "text_model")  # before the raw files are read
        if self.sentiment_model:
            require_model_folder(self.sentiment_model, "sentiment_model")
