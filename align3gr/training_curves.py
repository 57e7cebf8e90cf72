"""`training_curves.png` of a training stage: training and evaluation losses, and the valid ranking metrics, against
optimiser steps, drawn from the trainer's log history so under- and over-fitting show without reading numbers.

The log's closing evaluation of the kept model (SFT) is not a point of the curves: Transformers logs it at the last
step, whatever checkpoint was kept. Its rows hold `final_*` metrics and `MODEL_STEP`, the step of the model they
measure, which the curves mark with a vertical line."""

from __future__ import annotations

from pathlib import Path

CURVES_FILE = "training_curves.png"
CLOSING_PREFIX = "final"
"""The metric prefix of the closing evaluation of the kept model (`final_valid_seq_loss`, ...)."""
MODEL_STEP = "model_step"
"""The field of the closing evaluation's log rows: the step of the model they measure (the kept checkpoint's)."""


def series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of every log row holding `key` but the closing evaluation's, which is logged at the last step
    whatever model it measures."""
    rows = [(row["step"], row[key]) for row in history if key in row and "step" in row and MODEL_STEP not in row]
    return [s for s, _ in rows], [v for _, v in rows]


def kept_step(history: list[dict]) -> int | None:
    """The step of the model the closing evaluation measured (the kept one), or None when the log has none."""
    return next((row[MODEL_STEP] for row in history if MODEL_STEP in row), None)


def plot_training_curves(history: list[dict], path: Path, title: str) -> None:
    """Losses (left) and every `eval_valid_*` metric (right, when logged) against steps, with the kept model's step
    marked, written to `path`."""
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
    if ranking:
        for key in ranking:
            axes[0][1].plot(*series(history, key), marker="o", label=key.removeprefix("eval_valid_"))
        axes[0][1].set(xlabel="step", ylabel="valid sample, history excluded", title="beam-search ranking")
    kept = kept_step(history)
    for axis in axes[0]:
        if kept is not None:
            axis.axvline(kept, color="grey", linestyle=":", label=f"kept model (step {kept})")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
