"""`training_args` (issue 16): trainer arguments by their own names, checked when the config is read (unknown keys
with the close ones, values of the wrong type, keys a stage option or align3gr sets), merged from the YAML and the
`--training-arg` flags, passed unchanged to `SFTConfig` and `SoftmaxDPOConfig`, and `report_to: tensorboard`
leaving event files in the published output (SFT, UniSID)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_sft_stage import SMALL, scid  # noqa: F401 (fixture)
from test_unisid import TINY, catalogue  # noqa: F401 (fixture)

from align3gr.cli import build_parser
from align3gr.config import config_from_sources
from align3gr.dpo.arguments import dpo_argument_values, dpo_arguments
from align3gr.dpo.config import DPOStageConfig
from align3gr.dpo.stage import copy_start_model
from align3gr.errors import ConfigError
from align3gr.pipeline.config import load_pipeline_config, training_arg_overrides
from align3gr.sft.arguments import sft_argument_values, sft_arguments
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.stage import run_sft
from align3gr.stage_output import LOGS
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.stage import run_tokenize
from align3gr.tokenize.unisid.config import UniSIDConfig


def _config(tmp_path: Path, cls: type, training_args: dict, **options):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({cls.section: {**options, "training_args": training_args}}))
    return config_from_sources(cls, path)


@pytest.mark.parametrize(
    ("cls", "training_args", "message"),
    [
        (SFTStageConfig, {"optimm": "adafactor"}, "'optimm' is not an argument of SFTConfig; did you mean optim"),
        (DPOStageConfig, {"max_grad_nrom": 1}, "'max_grad_nrom' is not an argument of SoftmaxDPOConfig; did you mean "
                                               "max_grad_norm"),
        (SFTStageConfig, {"logging_dir": "tb"}, r"'logging_dir' is not .*TENSORBOARD_LOGGING_DIR"),
        (SFTStageConfig, {"max_grad_norm": "big"}, "max_grad_norm='big': expected float"),
        (SFTStageConfig, {"gradient_checkpointing_kwargs": 3}, "gradient_checkpointing_kwargs=3: expected dict"),
        (SFTStageConfig, {"optim": "adamw_tourch"}, r"optim='adamw_tourch': expected one of adamw_torch, .*did you "
                                                    "mean adamw_torch"),
        (SFTStageConfig, {"report_to": "tensorbord"}, "report_to='tensorbord': expected one of .*did you mean "
                                                      "tensorboard"),
        (SFTStageConfig, {"learning_rate": 1e-4}, "'learning_rate' is set from the option 'learning_rate' of this "
                                                  "section: set that instead"),
        (SFTStageConfig, {"eval_steps": 5}, "'eval_steps' is set from the option 'save_steps'"),
        (SFTStageConfig, {"train_sampling_strategy": "random"}, "'train_sampling_strategy' is set from the option "
                                                                "'group_by_length'"),
        (DPOStageConfig, {"beta": 0.5}, "'beta' is set from the option 'beta'"),
        (SFTStageConfig, {"output_dir": "elsewhere"}, r"'output_dir' is set by align3gr \(the stage's work folder"),
        (SFTStageConfig, {"completion_only_loss": False}, "'completion_only_loss' is set by align3gr"),
        (SFTStageConfig, {"eval_strategy": "no"}, "'eval_strategy' is set by align3gr"),
        (DPOStageConfig, {"loss_type": ["hinge"]}, r"'loss_type' cannot be set here \(the loss is Eq. 3"),
        (DPOStageConfig, {"label_smoothing_factor": 0.1}, r"'label_smoothing_factor' cannot be set here \(the loss is "
                                                          r"Eq. 3.*, which has no label smoothing\): remove it"),
        (DPOStageConfig, {"train_sampling_strategy": "group_by_length"}, "'train_sampling_strategy' cannot be set "
                                                                         "here .*without input_ids"),
        (DPOStageConfig, {"dataset_num_proc": 2}, "'dataset_num_proc' cannot be set here .*prepares and collates"),
        (DPOStageConfig, {"sync_ref_model": True}, r"'sync_ref_model' cannot be set here \(each stage's reference is "
                                                   "the model it starts from"),
        (DPOStageConfig, {"model_init_kwargs": {}}, "'model_init_kwargs' cannot be set here .*loads its start model"),
        (SFTStageConfig, {"logging_strategy": "epoch"}, r"'logging_strategy' is set by align3gr \(steps: the training "
                                                        "log"),
        (DPOStageConfig, {"logging_strategy": "no"}, r"'logging_strategy' is set by align3gr \(steps"),
    ],
)  # fmt: skip
def test_a_bad_key_or_value_is_refused_when_the_config_is_read(tmp_path, cls, training_args, message):
    with pytest.raises(ConfigError, match=rf"c\.yaml, section '{cls.section}': training_args: {message}"):
        _config(tmp_path, cls, training_args)


@pytest.mark.parametrize(
    ("key", "value"),
    [("eval_strategy", "steps"), ("eval_steps", 5), ("eval_delay", 1), ("eval_on_start", True),
     ("load_best_model_at_end", True), ("metric_for_best_model", "loss"), ("greater_is_better", False),
     ("per_device_eval_batch_size", 8), ("eval_accumulation_steps", 2), ("batch_eval_metrics", True),
     ("eval_do_concat_batches", False), ("eval_use_gather_object", True), ("bf16_full_eval", True),
     ("fp16_full_eval", True), ("prediction_loss_only", True), ("include_for_metrics", ["inputs"])],
)  # fmt: skip
def test_a_dpo_stage_refuses_evaluation_arguments_it_has_no_eval_set_for(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"training_args: '{key}' cannot be set here \(a DPO stage has no eval set"):
        _config(tmp_path, DPOStageConfig, {key: value})


@pytest.mark.parametrize("cls", [SFTStageConfig, DPOStageConfig])
@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [("resume_from_checkpoint", "elsewhere/checkpoint-2", "resume comes from the stage's OUT.work checkpoints"),
     ("do_train", False, "the stage decides what it runs"),
     ("do_eval", True, "the stage decides what it runs"),
     ("do_predict", True, "the stage decides what it runs"),
     ("save_only_model", True, "a resumed run ends like an uninterrupted one only from checkpoints that hold the "
                               "optimizer"),
     ("ignore_data_skip", True, "a resumed run ends like an uninterrupted one only by skipping the batches"),
     ("push_to_hub", True, "the trainer would push its work folder, a model without code tables; `align3gr push`"),
     ("hub_model_id", "me/model", "the trainer would push its work folder")],
)  # fmt: skip
def test_every_stage_refuses_arguments_of_resuming_publishing_and_of_what_runs(tmp_path, cls, key, value, reason):
    with pytest.raises(ConfigError, match=rf"training_args: '{key}' cannot be set here \({reason}.*\): remove it"):
        _config(tmp_path, cls, {key: value})


def test_values_are_converted_to_the_arguments_types(tmp_path):
    config = _config(
        tmp_path, SFTStageConfig,
        {"max_grad_norm": "0.5", "adam_beta2": 0.99, "optim": "adafactor", "report_to": "tensorboard",
         "gradient_checkpointing_kwargs": {"use_reentrant": False}, "include_num_input_tokens_seen": "true"},
    )  # fmt: skip
    assert config.training_args == {
        "max_grad_norm": 0.5,
        "adam_beta2": 0.99,
        "optim": "adafactor",
        "report_to": ["tensorboard"],
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "include_num_input_tokens_seen": True,
    }


def test_flags_merge_into_the_yaml_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"dpo": {"training_args": {"optim": "adafactor", "weight_decay": 0.1}}}))
    flags = ["--training-arg", "weight_decay=0.2", "--training-arg", "lr_scheduler_type=linear"]
    args = build_parser().parse_args(
        ["dpo", "--data", "d", "--start", "s", "--out", "o", "--config", str(path), *flags]
    )
    dpo, _ = args.configure(args)
    assert dpo.training_args == {"optim": "adafactor", "weight_decay": 0.2, "lr_scheduler_type": "linear"}
    args = build_parser().parse_args(["sft", "--data", "d", "--scid", "s", "--out", "o", "--training-arg", "optm=sgd"])
    with pytest.raises(ConfigError, match="--training-arg: 'optm' is not an argument of SFTConfig; did you mean optim"):
        args.configure(args)


def test_key_value_flags_collect_their_pairs_a_later_key_winning(capsys):
    parser = build_parser()
    args = parser.parse_args(["data", "build", "--out", "o", "--option", "name=X", "--option", "name=Y=1"])
    assert args.option == {"name": "Y=1"}
    with pytest.raises(SystemExit):
        parser.parse_args(["sft", "--data", "d", "--scid", "s", "--out", "o", "--training-arg", "optim"])
    assert "--training-arg 'optim': expected KEY=VALUE" in capsys.readouterr().err


def test_pipeline_flags_go_to_both_training_sections_or_the_one_named(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"sft": {"training_args": {"optim": "adafactor"}}}))
    flags = {"report_to": "tensorboard", "sft.max_grad_norm": "0.5", "unisid.adam_beta2": "0.99"}
    config = load_pipeline_config(path, training_arg_overrides(flags))
    assert config.sft.training_args == {"optim": "adafactor", "report_to": ["tensorboard"], "max_grad_norm": 0.5}
    assert config.dpo.training_args == {"report_to": ["tensorboard"]}
    assert UniSIDConfig(**config.tokenize.unisid_options).training_args == {"adam_beta2": 0.99}
    with pytest.raises(ConfigError, match="--training-arg evaluate.x=1: expected"):
        training_arg_overrides({"evaluate.x": "1"})
    with pytest.raises(ConfigError, match="^--training-arg, section 'tokenize': unisid_options: training_args: "
                                          "'weight_decay' is set"):  # fmt: skip
        load_pipeline_config(path, training_arg_overrides({"unisid.weight_decay": "0.1"}))  # no --unisid-options flag
    with pytest.raises(ConfigError, match="^--training-arg, section 'dpo': training_args: 'bf16_full_eval' cannot"):
        load_pipeline_config(path, training_arg_overrides({"bf16_full_eval": "true"}))  # SFT's, not DPO's


def test_the_arguments_reach_the_trl_configs_unchanged(tmp_path):
    given = {"optim": "adafactor", "max_grad_norm": 0.5, "adam_beta2": 0.99, "report_to": ["tensorboard"]}
    sft = sft_arguments(SFTStageConfig(training_args=given, weight_decay=0.1), tmp_path, eval_steps=10)
    assert (sft.optim, sft.max_grad_norm, sft.adam_beta2, sft.report_to) == ("adafactor", 0.5, 0.99, ["tensorboard"])
    assert sft.weight_decay == 0.1 and sft.completion_only_loss  # the stage's own arguments stay
    options = {**given, "weight_decay": 0.05, "lr_scheduler_type": "cosine_with_min_lr",
               "lr_scheduler_kwargs": {"min_lr": 1e-6}}  # fmt: skip
    dpo = dpo_arguments(DPOStageConfig(training_args=options), tmp_path)
    assert (dpo.optim, dpo.max_grad_norm, dpo.weight_decay, dpo.lr_scheduler_type) == (
        "adafactor", 0.5, 0.05, "cosine_with_min_lr"
    )  # fmt: skip
    assert dpo.lr_scheduler_kwargs == {"min_lr": 1e-6} and dpo.beta == DPOStageConfig().beta
    assert sft_arguments(SFTStageConfig(), tmp_path, eval_steps=10).report_to == []  # default "none"


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (SFTStageConfig, lambda config, path: sft_argument_values(config, path, eval_steps=10)),
        (DPOStageConfig, dpo_argument_values),
    ],
)
@pytest.mark.parametrize("probe", [True, False])
def test_every_argument_a_stage_sets_is_refused_in_training_args_but_report_to(tmp_path, cls, values, probe):
    """The stage's `trainer_args` list every argument its builder sets, so none is silently overridden."""
    config = cls(valid_users=8 if probe else 0) if cls is SFTStageConfig else cls()
    for key, value in values(config, tmp_path).items():
        if key == "report_to":
            continue
        with pytest.raises(ConfigError, match=f"training_args: '{key}' is set"):
            cls(training_args={key: value}).validate()


def test_unisid_applies_only_what_its_own_loop_uses():
    with pytest.raises(ConfigError, match=r"unisid_options.training_args: 'optim' is not used: UniSID trains in a loop "
                                          r"of its own .* applies only adam_beta1, .*report_to"):  # fmt: skip
        UniSIDConfig(training_args={"optim": "adafactor"})
    with pytest.raises(ConfigError, match="set from the option 'unisid_options.epochs'"):
        UniSIDConfig(training_args={"num_train_epochs": 3})
    with pytest.raises(ConfigError, match="report_to='neptune': expected one of none, all, aim, tensorboard"):
        UniSIDConfig(training_args={"report_to": "neptune"})  # a Trainer integration, not an Accelerate tracker


def _scalars(logs: Path) -> dict[str, list[tuple[int, float]]]:
    """The (step, value) points of every scalar of the TensorBoard event files under `logs`."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for folder in {events.parent for events in logs.rglob("events.out.tfevents.*")}:
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((event.step, event.value) for event in accumulator.Scalars(tag))
    return scalars


@pytest.mark.slow
def test_sft_with_report_to_tensorboard_publishes_its_event_files(ml100k_small, scid, tmp_path):  # noqa: F811
    out = tmp_path / "run" / "sft"
    config = SFTStageConfig(**SMALL, valid_users=0, training_args={"report_to": "tensorboard", "optim": "adafactor"})
    meta = run_sft(ml100k_small, scid, out, config).meta
    assert meta["config"]["training_args"] == {"report_to": ["tensorboard"], "optim": "adafactor"}
    assert list((out / LOGS).glob("*/events.out.tfevents.*"))  # runs/DATE_HOST/ as Transformers names it
    scalars = _scalars(out / LOGS)
    assert len(scalars["train/loss"]) == SMALL["max_steps"] and "eval/valid_seq_loss" in scalars
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["sft", "sft_base"]  # no work or temporary folder


@pytest.mark.slow
def test_the_closing_evaluation_reaches_tensorboard_as_the_kept_models(ml100k_small, scid, tmp_path, monkeypatch):  # noqa: F811
    """With TRL's own loss (the path of a full fine-tune of a large vocabulary), TRL adds its `eval_*` metrics to
    every evaluation's log; the closing evaluation of the kept model (step 2 of a run stopped at step 6) reaches the
    trackers as `final_*` with its step, not as step-6 points of the evaluation curves."""
    monkeypatch.setattr("align3gr.sft.trainer.needs_model_loss", lambda model, use_lora: False)
    options = {**SMALL, "max_steps": 20, "save_steps": 2, "learning_rate": 0.0, "tasks": ["seq"]}
    config = SFTStageConfig(seq_format="stream", valid_users=16, early_stopping_patience=2,
                            training_args={"report_to": "tensorboard"}, **options)  # fmt: skip
    meta = run_sft(ml100k_small, scid, tmp_path / "sft", config).meta
    assert meta["steps"] == 6 and meta["best"]["step"] == 2
    scalars = _scalars(tmp_path / "sft" / LOGS)
    assert {"eval/mean_token_accuracy", "eval/valid_ndcg@10", "eval/valid_seq_loss"} <= set(scalars)  # TRL's, ours
    for tag, points in scalars.items():
        if tag.startswith("eval/"):
            counts = Counter(step for step, _ in points)  # TRL's: once per eval dataset, as many at each step
            assert sorted(counts) == [0, 2, 4, 6] and len(set(counts.values())) == 1, (tag, counts)
    assert set(scalars["train/model_step"]) == {(6, 2)}  # a log per eval dataset
    closing = {tag for tag in scalars if tag.startswith("train/final_")}
    assert {"train/final_mean_token_accuracy", "train/final_valid_ndcg@10", "train/final_valid_seq_loss"} <= closing


@pytest.mark.slow
def test_sft_writes_tensorboard_logs_to_a_folder_the_user_gives(ml100k_small, scid, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    config = SFTStageConfig(**SMALL, valid_users=0, training_args={"report_to": "tensorboard"})
    run_sft(ml100k_small, scid, tmp_path / "sft", config)
    assert len(_scalars(tmp_path / "tb")["train/loss"]) == SMALL["max_steps"]
    assert not (tmp_path / "sft" / LOGS).exists()


@pytest.mark.slow
def test_unisid_logs_its_steps_through_an_accelerate_tracker(catalogue, tmp_path):  # noqa: F811
    options = {**TINY, "training_args": {"report_to": "tensorboard", "max_grad_norm": 0.5, "adam_beta2": 0.99}}
    config = TokenizeConfig(item_tokenizer="unisid", dual=False, u2i=False, codebook_size=4, unisid_options=options)
    report = run_tokenize(catalogue, None, tmp_path / "scid", config)
    scalars = _scalars(tmp_path / "scid" / LOGS)
    assert len(scalars["train/loss"]) == report["unisid"]["steps"] and "train/learning_rate" in scalars
    assert not (tmp_path / "scid.work").exists()


def test_the_dpo_guard_keeps_the_trained_stages_logs_with_the_start_model(tmp_path):
    previous, out, folder = tmp_path / "sft", tmp_path / "sp_easy", tmp_path / "published"
    files = {
        previous / "model.safetensors": "start",
        out / "model.safetensors": "trained",
        out / "meta.json": "{}",
        out / LOGS / "Jan01_host" / "events.out.tfevents.1": "events",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    folder.mkdir()
    copy_start_model(previous, out, folder)
    assert (folder / "model.safetensors").read_text() == "start" and (folder / "meta.json").read_text() == "{}"
    assert (folder / LOGS / "Jan01_host" / "events.out.tfevents.1").read_text() == "events"
