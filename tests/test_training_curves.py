"""`training_curves`: the closing evaluation of the kept model, which Transformers logs at the last step, is no point
of the curves; the curves mark the kept model's step instead."""

from __future__ import annotations

import pytest

from align3gr.training_curves import CURVES_FILE, kept_step, plot_training_curves, series

HISTORY = [  # an SFT log, trimmed: evaluated every 2 steps, the step-2 checkpoint kept, stopped early at step 6
    {"eval_valid_seq_loss": 6.56, "eval_valid_ndcg@10": 0.0, "epoch": 0, "step": 0},
    {"loss": 6.56, "epoch": 0.1, "step": 1},
    {"eval_valid_seq_loss": 6.50, "eval_valid_ndcg@10": 0.2, "epoch": 0.2, "step": 2},
    {"loss": 6.2, "epoch": 0.4, "step": 4},
    {"eval_valid_seq_loss": 5.94, "eval_valid_ndcg@10": 0.1, "epoch": 0.4, "step": 4},
    {"eval_valid_seq_loss": 5.55, "eval_valid_ndcg@10": 0.1, "epoch": 0.6, "step": 6},
    {"train_runtime": 11.0, "train_loss": 6.25, "epoch": 0.6, "step": 6},
    {"final_valid_seq_loss": 6.50, "final_valid_ndcg@10": 0.2, "epoch": 0.6, "step": 6, "model_step": 2},
]


def test_series_leave_out_the_closing_evaluation_logged_at_the_last_step():
    assert series(HISTORY, "eval_valid_seq_loss") == ([0, 2, 4, 6], [6.56, 6.50, 5.94, 5.55])
    assert series(HISTORY, "final_valid_seq_loss") == ([], [])  # measures the step-2 model: no point at step 6
    assert series(HISTORY, "loss") == ([1, 4], [6.56, 6.2])


def test_the_kept_step_is_the_closing_evaluations_model_step():
    assert kept_step(HISTORY) == 2
    assert kept_step(HISTORY[:-1]) is None  # a DPO stage's log: no closing evaluation


@pytest.mark.parametrize("history", [HISTORY, HISTORY[:-1]], ids=["kept_marked", "no_closing_evaluation"])
def test_the_curves_draw_no_point_of_the_closing_evaluation_and_mark_the_kept_step(history, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot_training_curves(history, tmp_path / CURVES_FILE, "sft")
    monkeypatch.undo()
    plt.close(figures[0])
    assert (tmp_path / CURVES_FILE).stat().st_size > 0
    lines = [(line.get_label(), list(line.get_xdata())) for axis in figures[0].axes for line in axis.get_lines()]
    kept = [("kept model (step 2)", [2, 2])] * 2 if history is HISTORY else []
    assert sorted(lines) == sorted(
        [("loss", [1, 4]), ("eval_valid_seq_loss", [0, 2, 4, 6]), ("ndcg@10", [0, 2, 4, 6]), *kept]
    )
