"""`align3gr data build`: run a builder, filter, split-ready sequences, feedback, task texts, atomic write."""

from __future__ import annotations

import functools
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import align3gr
from align3gr.config import config_to_dict, fingerprint_options
from align3gr.console import format_mapping, progress_bar
from align3gr.data.builder import Builder, RawData, get_builder
from align3gr.data.config import DataConfig
from align3gr.data.dataset import Dataset, load_dataset, write_dataset
from align3gr.data.feedback import assign_feedback
from align3gr.data.interactions import SpooledTexts
from align3gr.data.preprocess import filter_interactions
from align3gr.data.schema import Sequence, User
from align3gr.data.texts import add_user_texts, iter_intentions
from align3gr.errors import DataError
from align3gr.io import remembered_sha256, reporting_reads, sha256_json
from align3gr.models.local import local_models
from align3gr.prompts import prompt_digest
from align3gr.stage_output import StageOutput

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """What a build did: where, with which builder, its statistics, whether it was already up to date, and how long it
    took."""

    path: Path
    builder: str
    statistics: dict[str, float | int]
    up_to_date: bool
    seconds: float

    @functools.cached_property
    def dataset(self) -> Dataset:
        """The built dataset, loaded (and validated) from disk on first access."""
        return load_dataset(self.path)

    def render(self) -> str:
        """The statistics `align3gr data build` prints."""
        state = "up to date, reused" if self.up_to_date else f"built in {self.seconds:.1f}s"
        return format_mapping(self.statistics, f"\nDataset {self.path} ({self.builder}; {state})")


def natural_key(value: str) -> tuple[int, int, str]:
    """Sort numeric IDs numerically and the rest as strings, so output order is stable and readable; the ID itself
    breaks ties ("1", "01"), as the IDs come from a set, whose order varies with the hash seed."""
    return (0, int(value), value) if value.isdecimal() else (1, 0, value)


def source_records(builder: Builder, source: Path, out: Path) -> list[dict]:
    """File name, size and sha256 of every raw file the builder reads; a raw file inside `out` is an error, as
    publishing the dataset replaces that folder whole."""
    records = []
    for path in builder.sources(source):
        if path.resolve().is_relative_to(out.resolve()):
            raise DataError(f"this raw file lies in the output folder {out}, which a build replaces whole: "
                            "choose an --out outside the source", path)  # fmt: skip
        stat = path.stat()
        records.append({"file": path.name, "bytes": stat.st_size, "sha256": remembered_sha256(path)})
    return records


def text_inputs(config: DataConfig) -> dict:
    """What the texts and feedback levels depend on beyond the config: the template file's sha256 and the identity
    of each local model folder (text writer, sentiment model), so an edited template or a replaced model rebuilds."""
    return {"prompts": prompt_digest("data_texts"), **local_models(config.text_model, config.sentiment_model)}


def build_dataset(
    builder_name: str,
    source: str | Path,
    out: str | Path,
    config: DataConfig | None = None,
    builder_options: dict[str, str] | None = None,
    overwrite: bool = False,
) -> BuildResult:
    """Build the canonical dataset of `source` into `out`, or reuse it when it was built from the same
    sources with the same config. A folder holding a different dataset is an error unless `overwrite`."""
    start = time.perf_counter()
    config = config or DataConfig()
    config.validate()
    builder = get_builder(builder_name, builder_options)
    source, out = Path(source), Path(out)
    sources = source_records(builder, source, out)
    fingerprint = sha256_json(
        {
            "builder": [builder.name, builder.version],
            "options": builder.options,
            "sources": [s["sha256"] for s in sources],
            "config": fingerprint_options(config),
            "texts": text_inputs(config),
            "version": align3gr.__version__,  # the task texts and filters are align3gr's code, not the builder's
        }
    )
    output = StageOutput(out)
    existing = output.claim(fingerprint, overwrite, "dataset", "sources, builder or config", ("builder", "sources"))
    if existing is not None:
        log.info("%s is up to date (same sources and config); nothing to do", out)
        return BuildResult(out, builder_name, existing["statistics"], True, time.perf_counter() - start)

    total = sum(s["bytes"] for s in sources)
    with (
        progress_bar(total=total, desc=f"reading {builder.name} files", unit="B", unit_scale=True) as bar,
        reporting_reads(bar.update),
    ):
        raw = builder.read(source)
    dataset = assemble(raw, config, builder.missing_metadata)
    for field in ("description", "categories"):
        if not any(getattr(item, field) for item in dataset.items.values()):
            log.warning("no item has a %s: the task texts go without one (is the metadata's field named as the "
                        "%s builder reads it?)", field, builder.name)  # fmt: skip
    feedback_source = assign_feedback(dataset, config.disliked_max, config.liked_min, config.sentiment_model)
    add_user_texts(dataset, config)
    dataset.meta = {
        "builder": {"name": builder.name, "version": builder.version, "options": builder.options},
        "sources": sources,
        "filters": {
            "missing_metadata": config.missing_metadata or builder.missing_metadata,
            "deduplicate": "keep first interaction of a repeated (user, item)",
            "user_k": config.user_k,
            "item_k": config.item_k,
            "kcore_rounds": dataset.meta.pop("kcore_rounds"),
            "max_users": config.max_users,
        },
        "counts": dataset.meta.pop("counts"),
        "split": "leave-one-out: train items[:-2], valid items[-2], test items[-1]",
        "max_history": config.max_history,
        "feedback": {
            "source": feedback_source,
            "disliked_max": config.disliked_max,
            "liked_min": config.liked_min,
            "sentiment_model": config.sentiment_model,
        },
        "texts": {"generator": config.text_generator, "model": config.text_model, "seed": config.seed},
        "config": config_to_dict(config),
        "align3gr_version": align3gr.__version__,
        "fingerprint": fingerprint,
    }
    output.publish(lambda folder: write_dataset(dataset, folder, intentions=iter_intentions(dataset, config)))
    if raw.interactions.reviews is not None:
        raw.interactions.reviews.close()
    return BuildResult(out, builder_name, dataset.meta["statistics"], False, time.perf_counter() - start)


def assemble(raw: RawData, config: DataConfig, builder_default: str) -> Dataset:
    """Filter the raw interactions and turn them into items, users and chronological sequences (the log's review
    spool is reordered to match them: `TextSpool.reorder`)."""
    interactions = raw.interactions
    result = filter_interactions(
        interactions,
        set(raw.items),
        user_k=config.user_k,
        item_k=config.item_k,
        missing_metadata=config.missing_metadata or builder_default,
    )
    rows = result.rows
    spool = interactions.reviews
    if spool is not None:
        spool.reorder(rows)  # review k is now that of rows[k]: each user's reviews are one run
    cols = interactions.columns()
    users = cols["user"][rows]
    boundaries = np.flatnonzero(np.diff(users)) + 1
    unrated = np.isnan(cols["rating"][rows])
    has_ratings = not unrated.any()
    if not has_ratings and not unrated.all():
        line = int(cols["line"][rows][unrated.argmax()])
        raise DataError(
            "this interaction has no rating while others have one: give every interaction a rating, or none",
            interactions.source,
            line,
        )
    user_ids, item_ids = interactions.user_ids, interactions.item_ids
    bounds = [0, *boundaries.tolist(), len(rows)] if len(rows) else [0]
    sequences: dict[str, Sequence] = {}
    for user, start, end in zip(users[bounds[:-1]].tolist(), bounds[:-1], bounds[1:], strict=True):
        user_id, block = user_ids[user], rows[start:end]
        sequences[user_id] = Sequence(
            user_id=user_id,
            items=[item_ids[i] for i in cols["item"][block].tolist()],
            timestamps=cols["timestamp"][block].tolist(),
            ratings=[int(r) if r.is_integer() else r for r in cols["rating"][block].tolist()] if has_ratings else None,
            reviews=SpooledTexts(spool, start, end) if spool is not None else None,
        )
    ordered_users = sorted(sequences, key=natural_key)
    if config.max_users is not None and config.max_users < len(ordered_users):
        ordered_users = sorted(random.Random(config.seed).sample(ordered_users, config.max_users), key=natural_key)
    kept_items = {i for u in ordered_users for i in sequences[u].items}
    dataset = Dataset(
        items={i: raw.items[i] for i in sorted(kept_items, key=natural_key)},
        users={u: raw.users.get(u) or User(user_id=u) for u in ordered_users},
        sequences={u: sequences[u] for u in ordered_users},
    )
    dataset.meta = {"counts": result.counts, "kcore_rounds": result.kcore_rounds}
    return dataset
