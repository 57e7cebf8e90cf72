"""`align3gr tokenize`: train the item and user tokenizers and write the code tables of the design.

Item codes come from the dual SCID tokenizer's item RQ-VAE (`item_tokenizer: dual`) or from UniSID
(`item_tokenizer: unisid`, `align3gr.tokenize.unisid`). User codes always come from the dual tokenizer,
trained with its U2I loss exactly as when it makes the item codes too; with UniSID and `dual: false` it does not
run (no user codes, no embeddings read).

`scid/` holds `item_codes.json` and `user_codes.json` (`{id: ["<a_12>", "<b_3>", "<c_200>"]}`: one token per
code, a prefix per side and level: items a, b, c, ...; users ua, ub, uc, ...), the dual tokenizer's weights and
config, UniSID's model in `unisid/` when it made the item codes, `report.json` (per level perplexity, utilisation,
top-1 load and V-measure against the category path, and SID entropy, of the raw codes, and the same of the unique
codes under `resolved`; collision rates before and after resolution; U2I AUC per phase; with UniSID its training
report, and the dual tokenizer's item-code statistics as `dual_items` for comparison; wall time) and
`code_usage.png` (of the unique codes). Item codes are always unique. Under `accelerate launch` every
process trains UniSID; the main process trains the dual tokenizer and writes the folder.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from align3gr.config import config_to_dict
from align3gr.console import format_mapping, format_table
from align3gr.data.dataset import Dataset, load_dataset
from align3gr.devices import numerics, stage_device
from align3gr.embed.stage import Embeddings
from align3gr.errors import ConfigError
from align3gr.io import write_json
from align3gr.scid.code_tables import ITEM_CODES, write_code_tables
from align3gr.scid.tokens import code_tokens
from align3gr.stage_output import NOT_CODE_TABLES, StageOutput, check_apart
from align3gr.tokenize.codebook_stats import level_statistics, level_v_measure, sid_entropy
from align3gr.tokenize.collisions import collision_rate, resolve_collisions
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.dual import DualTrainer, TrainHistory
from align3gr.tokenize.unisid.train import SAVED, train_unisid


class TokenizeReport(dict):
    """`report.json` of the tokenize run that wrote `path` (empty on the other processes of an `accelerate launch`)."""

    def __init__(self, path: Path, report: dict | None = None) -> None:
        super().__init__(report or {})
        self.path = path

    def render(self) -> str:
        """The tables `align3gr tokenize` prints: per level usage, V-measure, collisions and U2I AUC."""
        if not self:
            return ""
        rows = [
            {"side": side, "level": level["level"], "codes": level["codebook_size"],
             "utilisation": level["utilisation"], "perplexity": level["perplexity"], "top-1 load": level["top1_load"]}
            for side in ("items", "users") for level in self[side]["levels"]
        ]  # fmt: skip
        title = f"SCID tokenizer {self.path} (item codes: {self['item_tokenizer']}; raw codes, before de-duplication)"
        usage = "\n" + format_table(rows, title)
        raw, unique = self["items"]["v_measure"], self["items"]["resolved"]["v_measure"]
        dual = [level["v_measure"] for level in self.get("dual_items", {}).get("v_measure", [])]
        raw = raw + [{"homogeneity": "", "completeness": "", "v_measure": ""}] * (len(unique) - len(raw))
        rows = [
            {"level": level["level"], "homogeneity": raw[i]["homogeneity"], "completeness": raw[i]["completeness"],
             "V-measure": raw[i]["v_measure"], "V-measure (unique codes)": level["v_measure"]}
            | ({"dual V-measure": dual[i] if i < len(dual) else ""} if dual else {})
            for i, level in enumerate(unique)
        ]  # fmt: skip
        v_measure = "\n" + format_table(rows, "Item V-measure against the category path (items grouped by code prefix)")
        collisions = self["items"]["collisions"]
        summary = {
            "device": self.get("device", "cpu"),  # tokenized before the option: on the CPU
            "item collision rate before": collisions["collision_rate_before"],
            "item collision rate after": collisions["collision_rate_after"],
            "item SID entropy (raw codes)": self["items"]["sid_entropy"],
            "item SID entropy (unique codes, ln N)": self["items"]["resolved"]["sid_entropy"],
        }
        if self["users"]["levels"]:  # users tokenized (dual)
            summary["user collision rate"] = self["users"]["collision_rate"]
        for phase, label in (("phase1", "end of phase 1"), ("phase2", "end")):
            auc = (self["u2i_auc"][phase] or [float("nan")])[-1]
            if not math.isnan(auc):  # NaN or none: no users, no U2I AUC
                summary[f"valid U2I AUC ({label})"] = auc
        if "unisid" in self:
            history = self["unisid"]["history"]
            summary["UniSID loss (first -> last epoch)"] = f"{history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}"
            summary["UniSID steps"] = self["unisid"]["steps"]
            summary["UniSID device"] = self["unisid"].get("device", "")
        return "\n".join([usage, v_measure, format_mapping(summary | {"seconds": self["seconds"]})])


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


def code_statistics(codes: np.ndarray, sizes: list[int], labels: list[str]) -> dict:
    """Per level usage (codebook `sizes`) and V-measure against `labels`, and the SID entropy, of a code table."""
    return {
        "levels": level_statistics(codes, sizes),
        "v_measure": level_v_measure(codes, labels),
        "sid_entropy": sid_entropy(codes),
    }


def item_report(
    raw_codes: np.ndarray, costs: np.ndarray, codebook_size: int, labels: list[str], disambiguation_level: bool = True
) -> tuple[np.ndarray, dict]:
    """(unique codes, their statistics): `resolve_collisions` on the raw codes with the last level's costs [N, K];
    `code_statistics` of the raw codes, which carry the tokenizer's duplicated compositions (what QuaSID's SID
    entropy measures), of the unique codes under `resolved` (entropy ln N, last level's V-measure set by the
    resolution), and the collisions before and after."""
    codes, collisions = resolve_collisions(raw_codes, costs, disambiguation_level)
    sizes = [codebook_size] * raw_codes.shape[1]
    added = [int(codes[:, -1].max()) + 1] if codes.shape[1] > raw_codes.shape[1] else []
    statistics = code_statistics(raw_codes, sizes, labels) | {
        "collisions": collisions,
        "resolved": code_statistics(codes, sizes + added, labels),
    }
    return codes, statistics


def train_dual(dataset: Dataset, embeddings: Embeddings, config: TokenizeConfig, device: torch.device):
    """(trainer, model, raw item codes [N, L], item distances to the last codebook [N, K], user codes [U, L]) of
    the dual tokenizer trained on the dataset's embeddings on `device`; the model and the arrays on the CPU."""
    trainer = DualTrainer(dataset, embeddings, config, device)
    model = trainer.train()
    with torch.no_grad():
        z_items = model.items.latent(trainer.features(model, "item"))
        raw_item_codes = model.items.quantizer(z_items).codes.cpu().numpy()
        distances = model.items.quantizer.last_level_distances(z_items).cpu().numpy()
        user_codes = np.zeros((0, 0), int)
        if model.users is not None:
            user_codes = model.users.encode(trainer.features(model, "user")).cpu().numpy()
    return trainer, model.cpu(), raw_item_codes, distances, user_codes


def run_tokenize(
    data_dir: str | Path, embeddings_dir: str | Path | None, out_dir: str | Path, config: TokenizeConfig | None = None
) -> TokenizeReport:
    """Train the tokenizers on the dataset (and its embeddings) and write `scid/`; returns the report (empty on the
    other processes of an `accelerate launch`)."""
    from accelerate import PartialState

    start = time.perf_counter()
    config = config or TokenizeConfig()
    config.validate()
    unisid = config.item_tokenizer == "unisid"
    if (config.dual or not unisid) and embeddings_dir is None:
        raise ConfigError("the dual tokenizer reads the output folder of `align3gr embed`: give embeddings_dir")
    check_apart(out_dir, {"--data": data_dir, "--embeddings": embeddings_dir})
    dataset = load_dataset(data_dir)
    check_sizes(config, len(dataset.items), len(dataset.sequences))
    output = StageOutput(Path(out_dir), distributed=True, holds=ITEM_CODES, lacks=NOT_CODE_TABLES)
    device = stage_device(config.device, "tokenize")
    state = PartialState(cpu=device.type == "cpu")
    embeddings = Embeddings.load(embeddings_dir) if config.dual or not unisid else None
    if unisid and embeddings is not None:
        embeddings.check_made_for(dataset)  # before UniSID trains (hours on a real backbone), not after
    trained = train_unisid(dataset, config, output.work, device) if unisid else None
    if not state.is_main_process:
        state.wait_for_everyone()  # for the main process's publication
        return TokenizeReport(output.path)
    labels = [" > ".join(item.categories) for item in dataset.items.values()]
    model, history, user_codes = None, TrainHistory(), np.zeros((0, 0), int)
    if config.dual or not unisid:
        trainer, model, raw_item_codes, distances, user_codes = train_dual(dataset, embeddings, config, device)
        history = trainer.history
        item_codes, items = item_report(
            raw_item_codes, distances, config.codebook_size, labels, config.disambiguation_level
        )
    report: dict = {"item_tokenizer": config.item_tokenizer, "device": str(device), "numerics": numerics()}
    if trained is not None:
        if model is not None:
            report["dual_items"] = items
        item_codes, items = item_report(
            trained.codes, trained.last_level_costs, config.codebook_size, labels, config.disambiguation_level
        )
        report["unisid"] = trained.report
    report |= {
        "items": items,
        "users": {
            "levels": level_statistics(user_codes, [config.user_codebook_size] * config.levels)
            if len(user_codes)
            else [],
            "sid_entropy": sid_entropy(user_codes) if len(user_codes) else 0.0,
            "collision_rate": collision_rate(user_codes) if len(user_codes) else 0.0,
        },
        "u2i_auc": {
            "phase1": [row["valid_auc"] for row in history.phase1],
            "phase2": [row["valid_auc"] for row in history.phase2],
        },
        "history": {"phase1": history.phase1, "phase2": history.phase2},
        "config": config_to_dict(config),
        "data_fingerprint": dataset.meta.get("fingerprint"),
    }
    item_table = dict(zip(dataset.items, code_tokens(item_codes, "item"), strict=True))
    user_table = dict(zip(dataset.sequences, code_tokens(user_codes, "user"), strict=True)) if len(user_codes) else {}
    report["seconds"] = round(time.perf_counter() - start, 2)

    def write(folder: Path) -> None:
        write_code_tables(folder, item_table, user_table)
        if model is not None:
            model.save(folder)
        if trained is not None:
            os.replace(output.work / SAVED, folder / SAVED)
        write_json(folder / "report.json", report)
        plot_code_usage({"item": item_codes, "user": user_codes}, folder / "code_usage.png")

    output.publish(write)
    return TokenizeReport(output.path, report)
