"""The embedded default base model (`model: tiny`): a small Qwen2 whose tokenizer is trained on the dataset's own
text (titles, descriptions, profiles, queries, preference statements) and on the SFT prompt templates.

It is written as an ordinary model folder inside the run folder and loaded back with `from_pretrained`, exactly as
Qwen2.5 or Llama-2 would be; the same dataset and options give identical files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from align3gr.data.dataset import Dataset
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
