"""The embedded default base model (`model: tiny`): a small Qwen2 whose tokenizer is trained on the dataset's own
text (titles, descriptions, profiles, queries, preference statements) and on the SFT prompt templates.

It is written as an ordinary model folder inside the run folder and loaded back with `from_pretrained`, exactly as
Qwen2.5 or Llama-2 would be; the same dataset and options give identical files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from align3gr.data.dataset import Dataset
from align3gr.errors import ConfigError
from align3gr.io import read_json
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.sft.tasks import load_templates


def tiny_base_texts(dataset: Dataset) -> Iterator[str]:
    """The texts the tiny model's tokenizer is trained on."""
    for item in dataset.items.values():
        yield item.title
        yield item.description
    for user in dataset.users.values():
        yield user.profile
    for row in dataset.intentions:
        yield row["query"]
    yield from dataset.preferences.values()
    for paraphrases in load_templates().values():
        yield from paraphrases


TINY_FILES = frozenset(
    {"chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
     "tokenizer_config.json"}
)  # fmt: skip
"""The files of a tiny base folder (`build_tiny_base`)."""


def check_replaceable_base(folder: Path) -> None:
    """A ConfigError, before any work, when `folder` (where SFT builds the tiny base, `OUT_base`) holds anything but
    a tiny base's files: building it replaces the folder whole (a user's `models/qwen_base` beside `--out
    models/qwen`)."""
    if not folder.exists():
        return
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else {folder.name}
    if names <= TINY_FILES and (not names or read_json(folder / "config.json").get("model_type") == "qwen2"):
        return
    listed = ", ".join(sorted(names - TINY_FILES)[:3]) or "a config.json of another model"
    raise ConfigError(f"{folder}: `model: tiny` builds its base model here, replacing the folder, which holds other "
                      f"files ({listed}): move them, or give another output folder")  # fmt: skip


def build_tiny_base(
    dataset: Dataset, folder: str | Path, vocab_size: int, hidden_size: int, num_layers: int, seed: int
) -> Path:
    """Create the tiny base model of `dataset` in `folder` (replacing what was there) and return the folder."""
    return build_tiny_causal_lm(
        tiny_base_texts(dataset),
        folder,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        seed=seed,
    )
