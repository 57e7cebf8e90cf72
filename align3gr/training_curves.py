"""`training_curves.png` of a training stage: training and evaluation losses, and the valid ranking metrics, against
optimiser steps, drawn from the trainer's log history so under- and over-fitting show without reading numbers."""

from __future__ import annotations

from pathlib import Path

CURVES_FILE = "training_curves.png"


def series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of every log row holding `key`."""
    rows = [(row["step"], row[key]) for row in history if key in row and "step" in row]
    return [s for s, _ in rows], [v for _, v in rows]


def plot_training_curves(history: list[dict], path: Path, title: str) -> None:
    """Losses (left) and every `eval_valid_*` metric (right, when logged) against steps, written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = {k for row in history for k in row}
    losses = ["loss", *sorted(k for k in keys if k.startswith("eval_") and k.endswith("_loss"))]
    ranking = sorted(k for k in keys if k.startswith("eval_valid_") and "@" in k)
    figure, axes = plt.subplots(1, 2 if ranking else 1, figsize=(11 if ranking else 6, 4), squeeze=False)
    for key in losses:
        steps, values = series(history, key)
        if steps:
            axes[0][0].plot(steps, values, marker="." if key != "loss" else None, label=key)
    axes[0][0].set(xlabel="step", ylabel="loss", title=title)
    axes[0][0].legend(fontsize=8)
    if ranking:
        for key in ranking:
            axes[0][1].plot(*series(history, key), marker="o", label=key.removeprefix("eval_valid_"))
        axes[0][1].set(xlabel="step", ylabel="valid sample, history excluded", title="beam-search ranking")
        axes[0][1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
