"""`align3gr embed`: semantic embeddings of item text and user profiles, and collaborative embeddings.

Writes `embeddings/`: `semantic.safetensors` and `collaborative.safetensors` (tensors `items` and `users`, rows
in the order of `ids.json`), `ids.json`, `report.json` (encoder, dimensions, cache use, the collaborative
encoder's validation Recall@10, the device, wall time), and the collaborative encoder itself
(`collaborative_encoder.safetensors` and its hyperparameters `collaborative_encoder.json`, see `load_encoder`). The
folder is renamed into place when everything is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from align3gr.config import config_to_dict
from align3gr.console import format_mapping
from align3gr.data.dataset import Dataset, load_dataset
from align3gr.data.schema import Item
from align3gr.devices import numerics, stage_device
from align3gr.embed.collaborative import save_encoder, train_collaborative
from align3gr.embed.config import EmbedConfig
from align3gr.embed.semantic import SemanticEncoder
from align3gr.errors import DataError
from align3gr.io import cache_root, read_json, write_json
from align3gr.stage_output import StageOutput, check_apart

IDS_FILE = "ids.json"
"""The item and user IDs in the row order of the embedding matrices: the file every embeddings folder holds."""

FILES_VERSION = 4
"""Version of what `run_embed` writes, in the pipeline step's key: a run embedded by an earlier version (3: before the
collaborative encoder's epoch was chosen with each user's history left out of the valid ranking; 2: before semantic
vectors were encoded one text per forward; 1: before the collaborative encoder was saved) embeds again."""


def item_text(item: Item) -> str:
    """The text the semantic encoder reads for an item: title, category path, brand, description."""
    parts = [f"Title: {item.title}"]
    if item.categories:
        parts.append("Categories: " + " > ".join(item.categories))
    if isinstance(item.attributes.get("brand"), str):
        parts.append(f"Brand: {item.attributes['brand']}")
    if item.description:
        parts.append(f"Description: {item.description}")
    return "\n".join(parts)


@dataclass
class Embeddings:
    """The `embed` stage's artifacts, validated on load, and the folder holding them."""

    item_ids: list[str]
    user_ids: list[str]
    item_semantic: np.ndarray
    user_semantic: np.ndarray
    item_cf: np.ndarray
    user_cf: np.ndarray
    report: dict
    folder: Path | None = None

    @classmethod
    def load(cls, folder: str | Path) -> Embeddings:
        folder = Path(folder)
        for name in (IDS_FILE, "semantic.safetensors", "collaborative.safetensors", "report.json"):
            if not (folder / name).is_file():
                raise DataError(f"missing {name}; run `align3gr embed` first", folder)
        ids = read_json(folder / IDS_FILE)
        semantic, collaborative = (
            load_file(folder / "semantic.safetensors"),
            load_file(folder / "collaborative.safetensors"),
        )
        embeddings = cls(ids["items"], ids["users"], semantic["items"], semantic["users"], collaborative["items"],
                         collaborative["users"], read_json(folder / "report.json"), folder)  # fmt: skip
        embeddings.check(folder)
        return embeddings

    def check(self, where: str | Path) -> None:
        """Row counts match the IDs, and every value is finite."""
        for name, array, ids in (
            ("item_semantic", self.item_semantic, self.item_ids),
            ("user_semantic", self.user_semantic, self.user_ids),
            ("item_cf", self.item_cf, self.item_ids),
            ("user_cf", self.user_cf, self.user_ids),
        ):
            if array.ndim != 2 or len(array) != len(ids):
                raise DataError(f"{name} has shape {array.shape}; expected {len(ids)} rows (one per ID)", where)
            if not np.isfinite(array).all():
                raise DataError(f"{name} holds NaN or infinite values", where)

    def check_made_for(self, dataset: Dataset) -> None:
        """A DataError unless these embeddings were made from this build of `dataset` (`check_made_for`)."""
        check_made_for(dataset, {"items": self.item_ids, "users": self.user_ids}, self.report, self.folder)

    def render(self) -> str:
        """The summary of `report.json` that `align3gr embed` prints."""
        report, cache = self.report, self.report["semantic_cache"]
        summary = {
            "items": report["items"],
            "users": report["users"],
            "semantic dim": report["semantic_dim"],
            "texts encoded": cache["items"]["encoded"] + cache["users"]["encoded"],
            "texts from cache": cache["items"]["cached"] + cache["users"]["cached"],
            "collaborative dim": report["collaborative_dim"],
            "collaborative valid Recall@10": report["collaborative_valid_recall@10"],
            "device": report.get("device", report["config"]["device"]),  # before the option was resolved
            "seconds": report["seconds"],
        }
        return format_mapping(summary, f"\nEmbeddings {self.folder}")


def check_made_for(dataset: Dataset, ids: dict, report: dict, folder: Path | None) -> None:
    """A DataError unless embeddings with these `ids` (as in `ids.json`) and `report` were made from this build of
    `dataset`: the same items and users in its order, and its fingerprint. Another build of the same items (other
    filters, another split) trained the collaborative encoder on what this one holds out as valid and test."""
    for kind, key, expected in (("item", "items", list(dataset.items)), ("user", "users", list(dataset.sequences))):
        embedded = ids.get(key)
        if embedded != expected:
            shown = f"{len(embedded or [])} {kind}s, the dataset {len(expected)}"
            pairs = zip(embedded or [], expected, strict=False)
            differs = next((f"{kind} '{a}' where the dataset has '{b}'" for a, b in pairs if a != b), shown)
            raise DataError(
                f"the embeddings were computed for another dataset ({differs}); run `align3gr embed` again", folder
            )
    built, embedded_for = dataset.meta.get("fingerprint"), report.get("data_fingerprint")
    if built and embedded_for and built != embedded_for:
        raise DataError(
            f"the embeddings were computed for another build of the data (its fingerprint {embedded_for[:12]}..., "
            f"this data's {built[:12]}...: the collaborative features saw other splits); run `align3gr embed` again",
            folder,
        )


def run_embed(data_dir: str | Path, out_dir: str | Path, config: EmbedConfig | None = None) -> Embeddings:
    """Embed the dataset in `data_dir` into `out_dir`."""
    start = time.perf_counter()
    config = config or EmbedConfig()
    config.validate()
    check_apart(out_dir, {"--data": data_dir})
    output = StageOutput(Path(out_dir), holds=IDS_FILE)
    dataset = load_dataset(data_dir)
    device = stage_device(config.device, "embed")
    encoder = SemanticEncoder(config.semantic_model, config.batch_size, config.max_length, device)
    cache = Path(config.cache_dir) if config.cache_dir else cache_root() / "embeddings"
    item_semantic = encoder.encode([item_text(i) for i in dataset.items.values()], cache, desc="item text")
    item_stats = dict(encoder.stats)
    user_ids = list(dataset.sequences)
    user_semantic = encoder.encode([dataset.users[u].profile for u in user_ids], cache, desc="user profiles")
    cf = train_collaborative(dataset, config, device)
    report = {
        "semantic_encoder": str(encoder.path),
        "semantic_dim": int(item_semantic.shape[1]),
        "collaborative_dim": config.cf_dim,
        "items": len(dataset.items),
        "users": len(user_ids),
        "semantic_cache": {"items": item_stats, "users": dict(encoder.stats)},
        "collaborative_valid_recall@10": cf.valid_recall_at_10,
        "collaborative_epochs": cf.epochs,
        "data_fingerprint": dataset.meta.get("fingerprint"),
        "device": str(device),
        "numerics": numerics(),
        "config": config_to_dict(config),
        "seconds": round(time.perf_counter() - start, 2),
    }
    embeddings = Embeddings(
        list(dataset.items), user_ids, item_semantic, user_semantic, cf.items, cf.users, report, output.path
    )
    embeddings.check(data_dir)

    def write(folder: Path) -> None:
        save_file({"items": item_semantic, "users": user_semantic}, str(folder / "semantic.safetensors"))
        save_file({"items": cf.items, "users": cf.users}, str(folder / "collaborative.safetensors"))
        write_json(folder / IDS_FILE, {"items": embeddings.item_ids, "users": user_ids})
        write_json(folder / "report.json", report)
        save_encoder(cf.model, folder)

    output.publish(write)
    return embeddings
