"""SFT resumed where its checkpoints are no longer where they were written, or killed while it publishes: the
resumed run keeps the best checkpoint and takes no step it had taken."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_sft_stage import (  # noqa: F401 (fixture)
    RANKING_DROPS,
    SMALL,
    CheckpointWeights,
    KillAfterSave,
    Killed,
    same_weights,
    scid,
)
from transformers import TrainerCallback

from align3gr.sft.config import SFTStageConfig
from align3gr.sft.stage import run_sft, sft_trainer

STOPPING = {"early_stopping_patience": 2, "max_steps": 20, **RANKING_DROPS}
"""As in test_sft_stage's patience test: step 1 holds the best valid ranking, patience 2 stops the run at step 3, and
the weights of steps 1 and 3 differ (the learning rate is not 0)."""


class Steps(TrainerCallback):
    """The steps a `train()` call takes."""

    def __init__(self) -> None:
        self.taken: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.taken.append(state.global_step)


def trained(
    monkeypatch,
    data: Path,
    scid_dir: Path,
    out: Path,
    *,
    kill_after_save: int | None = None,
    kill_publishing: bool = False,
    weights: CheckpointWeights | None = None,
) -> tuple[dict, list[int]]:
    """Run the stopping SFT into `out`, killed as asked; its meta and the steps this call trained. `weights` records
    the checkpoints it saves (killed or not)."""
    import align3gr.sft.stage as stage

    steps = Steps()

    def killable(*args, **kwargs):
        trainer = sft_trainer(*args, **kwargs)  # the stage's own, not an earlier call's patch
        trainer.add_callback(steps)
        if weights is not None:
            trainer.add_callback(weights)
        if kill_after_save is not None:
            trainer.add_callback(KillAfterSave(kill_after_save))
        if kill_publishing:
            save = trainer.save_model

            def save_model(path=None, *rest, **options):
                if path is not None and not Path(path).name.startswith("checkpoint-"):
                    raise Killed  # killed while the kept model is written for publishing
                return save(path, *rest, **options)

            trainer.save_model = save_model
        return trainer

    monkeypatch.setattr(stage, "sft_trainer", killable)
    config = SFTStageConfig(seq_format="stream", valid_users=16, **{**SMALL, **STOPPING})
    return run_sft(data, scid_dir, out, config).meta, steps.taken


def test_a_run_folder_moved_before_its_resume_keeps_the_best_checkpoint(
    ml100k_small, scid, tmp_path, monkeypatch  # noqa: F811
):  # fmt: skip
    """Killed after the checkpoint of the step where it stopped, then moved: the state names the best checkpoint by
    its old path, which the resume finds under the new folder, and publishes (not the last step's weights)."""
    whole, _ = trained(monkeypatch, ml100k_small, scid, tmp_path / "whole" / "sft")
    weights = CheckpointWeights()
    with pytest.raises(Killed):
        trained(monkeypatch, ml100k_small, scid, tmp_path / "killed" / "sft", kill_after_save=3, weights=weights)
    assert sorted(weights.saved) == [1, 2, 3]
    (tmp_path / "killed").rename(tmp_path / "moved")
    resumed, taken = trained(monkeypatch, ml100k_small, scid, tmp_path / "moved" / "sft")
    assert taken == [] and resumed["best"] == whole["best"] and whole["best"]["step"] == 1
    model = "model.safetensors"
    assert (tmp_path / "moved" / "sft" / model).read_bytes() == (tmp_path / "whole" / "sft" / model).read_bytes()
    published = load_file(tmp_path / "moved" / "sft" / model)
    assert same_weights(published, weights.saved[1]) and not same_weights(published, weights.saved[3])


def test_a_run_killed_while_publishing_resumes_without_training_again(
    ml100k_small, scid, tmp_path, monkeypatch  # noqa: F811
):  # fmt: skip
    """The work folder keeps the last checkpoint beside the best one until the model is published, so a run killed
    after training resumes at its last step (the best is kept) instead of training again from the best, and publishes
    the best checkpoint's weights."""
    with pytest.raises(Killed):
        trained(monkeypatch, ml100k_small, scid, tmp_path / "sft", kill_publishing=True)
    work = tmp_path / "sft.work"
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-3"]
    best, last = (load_file(work / f"checkpoint-{step}" / "model.safetensors") for step in (1, 3))
    resumed, taken = trained(monkeypatch, ml100k_small, scid, tmp_path / "sft")
    assert taken == [] and resumed["steps"] == 3 and resumed["best"]["step"] == 1
    published = load_file(tmp_path / "sft" / "model.safetensors")
    assert same_weights(published, best) and not same_weights(published, last)
