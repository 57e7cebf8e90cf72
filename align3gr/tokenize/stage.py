"""`align3gr tokenize`: train the dual SCID tokenizer and write the code tables of the design.

`scid/` holds `item_codes.json` and `user_codes.json` (`{id: ["<a_12>", "<b_3>", "<c_200>"]}`: one token per
code, a prefix per side and level: items a, b, c, ...; users ua, ub, uc, ...), the tokenizer weights and config,
`report.json` (per level perplexity, utilisation, top-1 load; SID entropy; collision rates; U2I AUC per phase;
wall time) and `code_usage.png`. Item codes are always unique.
"""

from __future__ import annotations

import string
import time
from pathlib import Path

import numpy as np
import torch

from align3gr.config import config_to_dict
from align3gr.data.dataset import load_dataset
from align3gr.embed.stage import Embeddings
from align3gr.errors import ConfigError
from align3gr.io import atomic_directory, write_json
from align3gr.tokenize.codebook_stats import level_statistics, sid_entropy
from align3gr.tokenize.collisions import collision_rate, resolve_collisions
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.dual import DualTrainer


def code_tokens(codes: np.ndarray, side: str) -> list[list[str]]:
    """Token strings of a code table: level l of items is `<{letter}_{code}>`, of users `<u{letter}_{code}>`."""
    prefix = "" if side == "item" else "u"
    letters = [prefix + string.ascii_lowercase[level] for level in range(codes.shape[1])]
    return [[f"<{letters[level]}_{int(c)}>" for level, c in enumerate(row)] for row in codes]


def plot_code_usage(tables: dict[str, np.ndarray], path: Path) -> None:
    """One panel per side and level: how many items (users) each code holds, most used first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(side, codes) for side, codes in tables.items() if len(codes)]
    columns = max(codes.shape[1] for _, codes in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(3.2 * columns, 2.6 * len(rows)), squeeze=False)
    for r, (side, codes) in enumerate(rows):
        for level in range(columns):
            axis = axes[r][level]
            if level >= codes.shape[1]:
                axis.axis("off")
                continue
            counts = np.sort(np.bincount(codes[:, level]))[::-1]
            axis.bar(np.arange(len(counts)), counts, width=1.0)
            axis.set_title(f"{side} level {level}: {int((counts > 0).sum())} codes used", fontsize=9)
            axis.set_xlabel("code (by usage)", fontsize=8)
            axis.set_ylabel(f"{side}s", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def check_sizes(config: TokenizeConfig, items: int, users: int) -> None:
    """Fewer rows than codes per level cannot initialise the codebooks: say which and what to set."""
    if items < config.codebook_size:
        raise ConfigError(
            f"codebook_size={config.codebook_size} exceeds the {items} items; set codebook_size <= {items}"
        )
    if config.dual and users < config.user_codebook_size:
        raise ConfigError(
            f"user_codebook_size={config.user_codebook_size} exceeds the {users} users; "
            f"set user_codebook_size <= {users}"
        )


def run_tokenize(
    data_dir: str | Path, embeddings_dir: str | Path, out_dir: str | Path, config: TokenizeConfig | None = None
) -> dict:
    """Train the tokenizer on the dataset's embeddings and write `scid/`; returns the report."""
    start = time.perf_counter()
    config = config or TokenizeConfig()
    config.validate()
    dataset = load_dataset(data_dir)
    embeddings = Embeddings.load(embeddings_dir)
    check_sizes(config, len(embeddings.item_ids), len(embeddings.user_ids))
    trainer = DualTrainer(dataset, embeddings, config)
    model = trainer.train()
    with torch.no_grad():
        z_items = model.items.encoder(trainer.x_items)
        raw_item_codes = model.items.quantizer(z_items).codes.numpy()
        distances = model.items.quantizer.last_level_distances(z_items).numpy()
        user_codes = model.users.encode(trainer.x_users).numpy() if model.users is not None else np.zeros((0, 0), int)
    item_codes, collisions = resolve_collisions(raw_item_codes, distances)
    sizes = [config.codebook_size] * config.levels
    if item_codes.shape[1] > config.levels:
        sizes.append(int(item_codes[:, -1].max()) + 1)
    report = {
        "items": {
            "levels": level_statistics(item_codes, sizes),
            "sid_entropy": sid_entropy(item_codes),
            "collisions": collisions,
        },
        "users": {
            "levels": level_statistics(user_codes, [config.user_codebook_size] * config.levels)
            if len(user_codes)
            else [],
            "sid_entropy": sid_entropy(user_codes) if len(user_codes) else 0.0,
            "collision_rate": collision_rate(user_codes) if len(user_codes) else 0.0,
        },
        "u2i_auc": {
            "phase1": [row["valid_auc"] for row in trainer.history.phase1],
            "phase2": [row["valid_auc"] for row in trainer.history.phase2],
        },
        "history": {"phase1": trainer.history.phase1, "phase2": trainer.history.phase2},
        "config": config_to_dict(config),
        "data_fingerprint": dataset.meta.get("fingerprint"),
    }
    item_table = dict(zip(embeddings.item_ids, code_tokens(item_codes, "item"), strict=True))
    user_table = dict(zip(embeddings.user_ids, code_tokens(user_codes, "user"), strict=True)) if len(user_codes) else {}
    report["seconds"] = round(time.perf_counter() - start, 2)
    with atomic_directory(out_dir) as tmp:
        write_json(tmp / "item_codes.json", item_table)
        write_json(tmp / "user_codes.json", user_table)
        model.save(tmp)
        write_json(tmp / "report.json", report)
        plot_code_usage({"item": item_codes, "user": user_codes}, tmp / "code_usage.png")
    return report
