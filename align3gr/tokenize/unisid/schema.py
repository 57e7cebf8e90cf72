"""UniSID's advertisement-enhanced input schema (its section 3.1), generalised to items.

One sequence per item: the instruction prompt, the item's image when it has one, its title and description, its
structured attributes (category path, then brand, price and any other scalar attribute), then the L learnable
SID tokens and the embedding token. Images go through the checkpoint's image processor and fill the
`<|image_pad|>` placeholders of the text exactly as Qwen2.5-VL's processor fills them (one per merged patch), so
only the tokenizer and the image processor are needed (not the video processor, which wants torchvision).

The second view of an item (its only positive for the embedding, and at SID levels deeper than its category
path) drops each description word with probability `view_dropout` and mirrors the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from align3gr.data.dataset import Dataset
from align3gr.errors import DataError
from align3gr.tokenize.unisid.summaries import attribute_lines

EMBEDDING_TOKEN = "<|sid_emb|>"


def sid_tokens(levels: int) -> list[str]:
    """The L SID tokens, then the embedding token: appended to every input in this order."""
    return [f"<|sid_{level + 1}|>" for level in range(levels)] + [EMBEDDING_TOKEN]


@dataclass(frozen=True)
class ItemInput:
    """The schema fields of one item: title, description words, attribute lines and the image file (or None)."""

    item_id: str
    title: str
    words: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]
    image: Path | None


@dataclass(frozen=True)
class ItemView:
    """What one input sequence shows of an item: the description words kept and whether the image is mirrored."""

    item: ItemInput
    words: tuple[str, ...]
    mirrored: bool = False


def first_view(item: ItemInput) -> ItemView:
    """The whole input."""
    return ItemView(item, item.words)


def second_view(item: ItemInput, rng: np.random.Generator, dropout: float) -> ItemView:
    """The input with each description word dropped with probability `dropout` and the image mirrored."""
    keep = rng.random(len(item.words)) >= dropout
    return ItemView(item, tuple(w for w, k in zip(item.words, keep, strict=True) if k), mirrored=True)


def image_path(dataset: Dataset, item_id: str, attribute: str) -> Path | None:
    """The checked image file of an item (relative paths are read from the dataset folder), or None without one."""
    value = dataset.items[item_id].attributes.get(attribute)
    if value is None:
        return None
    where = (dataset.path / "items.jsonl") if dataset.path else None
    if not isinstance(value, str) or "://" in value:
        raise DataError(
            f"item '{item_id}': attribute '{attribute}' must be a local image file path (relative to the dataset "
            f"folder); got {value!r}",
            where,
        )
    path = Path(value) if Path(value).is_absolute() or dataset.path is None else dataset.path / value
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.load()  # decodes the pixels: a file cut short fails here, not in the middle of training
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"item '{item_id}': attribute '{attribute}': {path} is not a readable image ({err})", where
        ) from None
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise DataError(f"item '{item_id}': attribute '{attribute}': {path} is {width}x{height}; the vision "
                        f"processor takes images up to {MAX_ASPECT_RATIO}:1", where)  # fmt: skip
    return path


MAX_ASPECT_RATIO = 200
"""The most elongated image Qwen2-VL's image processor accepts (its `smart_resize` refuses more)."""


def item_inputs(dataset: Dataset, image_attribute: str, max_words: int) -> list[ItemInput]:
    """The schema fields of every item of `dataset`, in its order; images are checked here, before any training."""
    return [
        ItemInput(
            item_id,
            item.title,
            tuple(item.description.split()[:max_words]),
            tuple(attribute_lines(item, image_attribute)),
            image_path(dataset, item_id, image_attribute),
        )
        for item_id, item in dataset.items.items()
    ]


class ItemSchema:
    """Turns item views into the backbone's inputs: token IDs, attention mask, multimodal token types, pixels."""

    def __init__(self, tokenizer, image_processor, model_config, instruction: str, levels: int) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.instruction = instruction
        self.suffix = "".join(sid_tokens(levels))
        self.image_token_id = model_config.image_token_id
        start, pad, end = tokenizer.convert_ids_to_tokens(
            [model_config.vision_start_token_id, model_config.image_token_id, model_config.vision_end_token_id]
        )
        self.vision = (start, pad, end)

    def text(self, view: ItemView, image_tokens: int) -> str:
        """The sequence of one view, `image_tokens` placeholders standing for its image."""
        item = view.item
        lines = [self.instruction]
        if image_tokens:
            start, pad, end = self.vision
            lines.append(start + pad * image_tokens + end)
        lines.append(f"Title: {item.title}")
        if view.words:
            lines.append("Description: " + " ".join(view.words))
        lines += [f"{name}: {value}" for name, value in item.attributes]
        return "\n".join(lines) + "\n" + self.suffix

    def __call__(self, views: list[ItemView]) -> dict[str, torch.Tensor]:
        """A padded batch of `views`: `input_ids`, `attention_mask`, `mm_token_type_ids` (1 on image tokens) and,
        when some view has an image, `pixel_values` and `image_grid_thw`."""
        from PIL import Image, ImageOps

        images = []
        for view in views:
            if view.item.image is not None:
                with Image.open(view.item.image) as image:
                    image = image.convert("RGB")
                images.append(ImageOps.mirror(image) if view.mirrored else image)
        pixels: dict[str, torch.Tensor] = {}
        counts = iter([])
        if images:
            pixels = dict(self.image_processor(images=images, return_tensors="pt"))
            merge = self.image_processor.merge_size**2
            counts = iter((pixels["image_grid_thw"].prod(-1) // merge).tolist())
        texts = [self.text(view, next(counts) if view.item.image is not None else 0) for view in views]
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt")
        batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        batch["mm_token_type_ids"] = (batch["input_ids"] == self.image_token_id).int()
        return batch | pixels
