"""`align3gr baselines`: two full-ranking recommenders evaluated exactly as `align3gr evaluate` evaluates a model, so
every run shows whether the generative model earns its cost on its data.

- `popular`: the items by their count in the training part (`items[:-2]`) of all users, the same list for everyone;
- `sasrec`: the `embed` stage's collaborative encoder (SASRec-style, trained on the training part) scoring every item
  after the user's last `max_history` items before the target, the history a model's prompt shows.

Both rank the whole catalogue (ties in catalogue order) with the `evaluate` section's split, cut-offs, list length
(`beam_size`) and history exclusion (the user's whole history before the target, as for the models), and write
`metrics.json` and `predictions.jsonl` in the format of a model's evaluation (`scores`: counts, or the encoder's
dot products).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from align3gr.config import config_to_dict
from align3gr.console import format_table
from align3gr.data.dataset import Dataset, Example, load_dataset
from align3gr.embed.collaborative import load_encoder, pack, require_encoder
from align3gr.embed.stage import IDS_FILE, check_made_for
from align3gr.errors import ConfigError, DataError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.io import read_json
from align3gr.metrics import METRICS_FILE, Prediction, compute_metrics, ranking_metrics, write_evaluation
from align3gr.stage_output import NOT_AN_EVALUATION, StageOutput, check_apart

POPULAR, SEQUENTIAL = "popular", "sasrec"
BASELINES = (POPULAR, SEQUENTIAL)
Scorer = Callable[[Sequence[Example]], torch.Tensor]
"""Examples -> `[examples, catalogue]` scores, columns in the dataset's item order."""


@dataclass
class Baselines:
    """The metrics of each baseline evaluated into `path/NAME`, and the options they were evaluated with."""

    path: Path
    config: EvaluateConfig
    metrics: dict[str, dict]

    def render(self) -> str:
        """The table `align3gr baselines` prints."""
        rows = [
            {"baseline": name, **ranking_metrics(metrics, self.config.ks), "seconds": metrics["seconds"]}
            for name, metrics in self.metrics.items()
        ]
        protocol = "history excluded" if self.config.exclude_history else "history included"
        title = f"Baselines {self.path} ({self.config.split} split, full ranking, {protocol})"
        return "\n" + format_table(rows, title)


def popularity_scorer(dataset: Dataset) -> Scorer:
    """Every user gets each item's count in the training part of all users."""
    counts = Counter(item for user in dataset.sequences for item in dataset.train_items(user))
    scores = torch.tensor([float(counts[item]) for item in dataset.items])
    return lambda examples: scores.expand(len(examples), -1)


def check_embedded_items(dataset: Dataset, embeddings_dir: Path) -> None:
    """A DataError unless the embeddings were made from this build of the dataset (`check_made_for`): an encoder
    trained on another build's training part may have seen this one's valid and test items."""
    for name in (IDS_FILE, "report.json"):
        if not (embeddings_dir / name).is_file():
            raise DataError(f"missing {name}; run `align3gr embed` first", embeddings_dir)
    ids, report = read_json(embeddings_dir / IDS_FILE), read_json(embeddings_dir / "report.json")
    check_made_for(dataset, ids, report, embeddings_dir)


def sequential_scorer(dataset: Dataset, embeddings_dir: Path) -> Scorer:
    """The collaborative encoder of `embeddings_dir` scores every item after each example's history."""
    encoder = load_encoder(embeddings_dir)
    check_embedded_items(dataset, embeddings_dir)
    index = {item: k + 1 for k, item in enumerate(dataset.items)}
    length = encoder.hyperparameters["max_len"]
    return lambda examples: encoder.score_items(pack([[index[i] for i in ex.history] for ex in examples], length))


def full_ranking(dataset: Dataset, scorer: Scorer, config: EvaluateConfig) -> list[Prediction]:
    """Each user of `config.split`: the `beam_size` best-scored items of the catalogue, best first (ties in catalogue
    order), the user's history before the target left out when `exclude_history`."""
    catalogue = list(dataset.items)
    column = {item: k for k, item in enumerate(catalogue)}
    examples = dataset.examples(config.split)
    predictions = []
    for start in range(0, len(examples), config.batch_size):
        batch = examples[start : start + config.batch_size]
        scores = scorer(batch).float().clone()
        if config.exclude_history:
            for row, example in enumerate(batch):
                seen = [column[item] for item in dataset.seen_before(example.user_id, config.split)]
                scores[row, torch.tensor(seen, dtype=torch.long)] = float("-inf")
        order = scores.argsort(dim=1, descending=True, stable=True)[:, : config.beam_size]
        for example, columns, row in zip(batch, order.tolist(), scores, strict=True):
            kept = [k for k in columns if row[k] > float("-inf")]
            ranked, values = [catalogue[k] for k in kept], [float(row[k]) for k in kept]
            predictions.append(Prediction(example.user_id, example.target, ranked, values, len(kept), len(kept)))
    return predictions


def run_baseline(
    name: str,
    data_dir: str | Path,
    out_dir: str | Path,
    config: EvaluateConfig | None = None,
    embeddings_dir: str | Path | None = None,
) -> dict:
    """Evaluate baseline `name` (one of BASELINES; `sasrec` reads `embeddings_dir`) on `data_dir` into `out_dir`;
    returns its metrics."""
    start = time.perf_counter()
    config = config or EvaluateConfig()
    config.validate()
    output = StageOutput(Path(out_dir), holds=METRICS_FILE, lacks=NOT_AN_EVALUATION)
    dataset = load_dataset(data_dir)
    if name == POPULAR:
        scorer, source = popularity_scorer(dataset), data_dir
    elif name == SEQUENTIAL:
        if embeddings_dir is None:
            raise ConfigError(f"the {SEQUENTIAL} baseline needs the embed stage's folder (embeddings/)")
        scorer, source = sequential_scorer(dataset, Path(embeddings_dir)), embeddings_dir
    else:
        raise ConfigError(f"baseline must be one of {', '.join(BASELINES)}; got {name!r}")
    ranking_start = time.perf_counter()
    predictions = full_ranking(dataset, scorer, config)
    ranking_seconds = time.perf_counter() - ranking_start
    seconds = time.perf_counter() - start
    metrics = {
        **compute_metrics(predictions, config.ks, len(dataset.items)),
        "beam_size": config.beam_size,
        "exclude_history": config.exclude_history,
        "split": config.split,
        "decoder": "full_ranking",
        "catalogue_size": len(dataset.items),
        "seconds": round(seconds, 2),
        "ranking_seconds": round(ranking_seconds, 2),
        "users_per_second": round(len(predictions) / ranking_seconds, 2),
        "processes": 1,
        "baseline": name,
        "model": str(source),
        "config": config_to_dict(config),
    }
    output.publish(lambda folder: write_evaluation(folder, metrics, predictions))
    return metrics


def run_baselines(
    data_dir: str | Path, out_dir: str | Path, config: EvaluateConfig, embeddings_dir: str | Path | None = None
) -> Baselines:
    """Evaluate every baseline the inputs allow (`sasrec` reads `embeddings_dir`) on `data_dir`, each into
    `out_dir/NAME`."""
    out = Path(out_dir)
    names = BASELINES if embeddings_dir is not None else (POPULAR,)
    for name in names:  # every baseline's folder and input, before the first one is written
        check_apart(out / name, {"--data": data_dir, "--embeddings": embeddings_dir})
        StageOutput(out / name, holds=METRICS_FILE, lacks=NOT_AN_EVALUATION)
    if embeddings_dir is not None:
        require_encoder(Path(embeddings_dir))
        check_embedded_items(load_dataset(data_dir), Path(embeddings_dir))
    return Baselines(
        out, config, {name: run_baseline(name, data_dir, out / name, config, embeddings_dir) for name in names}
    )
