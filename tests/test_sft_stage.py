"""The `sft` stage end to end on a slice of MovieLens-100K: outputs, re-runs, bad input, and a real
`accelerate launch` with 2 CPU processes under DeepSpeed ZeRO-2 and ZeRO-3 (FSDP stops: it needs GPUs)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from launching import accelerate_launch
from safetensors.torch import load_file
from test_sft import code_tables
from test_sft_lora import tiny_llama  # noqa: F401 (fixture)
from transformers import TrainerCallback

from align3gr.data.dataset import load_dataset
from align3gr.errors import ConfigError, DataError
from align3gr.models.loading import load_for_inference
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.stage import run_sft
from align3gr.sft.trainer import RankingEarlyStopping

ROOT = Path(__file__).resolve().parent.parent
SMALL = {
    "max_steps": 3,
    "max_examples_per_task": 40,
    "tiny_vocab_size": 600,
    "tiny_hidden_size": 32,
    "eval_examples": 8,
    "per_device_train_batch_size": 4,
    "logging_steps": 1,
}


@pytest.fixture(scope="module")
def scid(ml100k_small, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sft_scid") / "scid"
    folder.mkdir()
    items, users = code_tables(load_dataset(ml100k_small))
    (folder / "item_codes.json").write_text(json.dumps(items))
    (folder / "user_codes.json").write_text(json.dumps(users))
    return folder


def test_stage_writes_a_loadable_model_and_reruns_as_a_no_op(ml100k_small, scid, tmp_path):
    out = tmp_path / "run" / "sft"
    result = run_sft(ml100k_small, scid, out, SFTStageConfig(**SMALL))
    meta = result.meta
    assert not result.up_to_date and meta["steps"] == 3 and not meta["adapter"]
    assert set(meta["examples"]) == {"seq", "item_align", "user_align", "asym_title", "asym_item"}  # no texts here
    assert meta["seq_loss"]["train_seq"]["start"] > 0 and meta["seq_loss"]["valid_seq"]["end"] > 0
    for name in ("item_codes.json", "user_codes.json"):
        assert (out / name).read_bytes() == (scid / name).read_bytes()
    assert (out / "training_log.jsonl").is_file() and (out / "sft_config.yaml").is_file()
    assert not (tmp_path / "run" / "sft.work").exists() and (tmp_path / "run" / "sft_base" / "config.json").is_file()
    model, tokenizer = load_for_inference(out)
    assert len(tokenizer) == meta["vocabulary"]["base_vocab_size"] + meta["vocabulary"]["scid_tokens"]
    assert model.get_input_embeddings().weight.shape[0] == meta["vocabulary"]["embedding_rows"]

    again = run_sft(ml100k_small, scid, out, SFTStageConfig(**SMALL))
    assert again.up_to_date and again.meta == meta
    elsewhere = run_sft(ml100k_small, scid, tmp_path / "other" / "sft", SFTStageConfig(**SMALL)).path
    assert (elsewhere / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()  # same seed
    (tmp_path / "run").rename(tmp_path / "moved")  # the run folder moved, its tiny base with it
    assert run_sft(ml100k_small, scid, tmp_path / "moved" / "sft", SFTStageConfig(**SMALL)).up_to_date


def test_lora_run_on_an_untied_llama_saves_an_adapter_that_loads_merged(ml100k_small, scid, request, tmp_path):
    llama = request.getfixturevalue("tiny_llama")
    options = {**SMALL, "max_examples_per_task": 8, "tasks": ["seq", "user_align"], "warmup_steps": 0}
    config = SFTStageConfig(model=str(llama), use_lora=True, lora_target_modules=["q_proj", "v_proj"], **options)
    result = run_sft(ml100k_small, scid, tmp_path / "sft", config)
    assert result.meta["adapter"] and (tmp_path / "sft" / "adapter_config.json").is_file()
    assert not (tmp_path / "sft" / "model.safetensors").exists()
    rows = result.meta["vocabulary"]["embedding_rows"]
    adapter = load_file(tmp_path / "sft" / "adapter_model.safetensors")
    assert not [k for k, v in adapter.items() if v.shape[0] == rows]  # trained rows only, not both whole matrices
    model, tokenizer = load_for_inference(tmp_path / "sft")
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer.convert_tokens_to_ids("<ua_0>") >= 300
    new_ids = tokenizer.convert_tokens_to_ids(["<a_0>", "<a_1>", "<ua_0>", "<ua_1>"])
    for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        assert weight[new_ids].std(0).sum() > 0  # the new rows started equal (the mean) and were trained apart


def test_code_tables_of_another_dataset_fail_before_training(ml100k_small, scid, tmp_path):
    other = tmp_path / "scid"
    other.mkdir()
    items = json.loads((scid / "item_codes.json").read_text())
    items["not-an-item"] = items.pop(next(iter(items)))
    (other / "item_codes.json").write_text(json.dumps(items))
    (other / "user_codes.json").write_text((scid / "user_codes.json").read_text())
    with pytest.raises(DataError, match="no code for '1'"):
        run_sft(ml100k_small, other, tmp_path / "sft", SFTStageConfig(**SMALL))
    assert not any(tmp_path.glob("sft*"))


@pytest.mark.slow
@pytest.mark.parametrize("launch_config", ["deepspeed_zero2", "deepspeed_zero3"])
def test_accelerate_launch_with_deepspeed_on_two_cpu_processes(launch_config, ml100k_small, scid, tmp_path):
    """ZeRO-2, and ZeRO-3 (weights partitioned as they load): the valid ranking probe of each evaluation runs on
    whole weights while the two processes rank different users. A launched re-run is a no-op reported once (checked
    under ZeRO-2 only: the up-to-date check runs before any model is loaded, so the ZeRO stage does not reach it)."""
    out = tmp_path / "sft"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    command = accelerate_launch(
        "--config_file", f"accelerate_configs/{launch_config}.yaml", "recipes/sft.py",
        "--data", str(ml100k_small), "--scid", str(scid), "--out", str(out), *flags,
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("SFT ") == 1  # the summary comes from the main process only
    meta = json.loads((out / "meta.json").read_text())
    assert meta["distributed"] == {"type": "DEEPSPEED", "processes": 2} and meta["steps"] == 3
    if launch_config == "deepspeed_zero2":
        again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0 and again.stdout.count("SFT ") == 1 and "up to date" in again.stdout
    model, _ = load_for_inference(out)
    assert not model.training


@pytest.mark.slow
@pytest.mark.skipif(torch.accelerator.is_available(), reason="FSDP, and LoRA under ZeRO-3, train there")
@pytest.mark.parametrize(
    ("launch_config", "flags", "message"),
    [
        ("fsdp", [], "distributed_type FSDP needs GPUs"),
        ("fsdp_qlora", ["--use-lora", "--load-in-4bit"], "distributed_type FSDP needs GPUs"),
        ("deepspeed_zero3", ["--use-lora"], "sft.use_lora trains a LoRA adapter under DeepSpeed ZeRO-3"),
    ],
    ids=["fsdp", "fsdp_qlora", "deepspeed_zero3_lora"],
)
def test_a_launch_that_needs_gpus_stops_on_cpu_processes_before_any_work(
    launch_config, flags, message, ml100k_small, scid, tmp_path
):
    """Accelerate shards with FSDP only across accelerators and would train CPU processes as DDP; PEFT gathers a LoRA
    model's trainable SCID rows on CUDA under ZeRO-3: the stage says so instead, before it reads the data."""
    command = accelerate_launch(
        "--config_file", f"accelerate_configs/{launch_config}.yaml", "recipes/sft.py",
        "--data", str(ml100k_small), "--scid", str(scid), "--out", str(tmp_path / "sft"), *flags,
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and message in done.stderr
    assert not (tmp_path / "sft").exists() and not (tmp_path / "sft.work").exists()


class CheckpointWeights(TrainerCallback):
    """The weights of each checkpoint a run writes, by step, read from the checkpoint once it is saved."""

    def __init__(self) -> None:
        self.saved: dict[int, dict[str, torch.Tensor]] = {}

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.saved[state.global_step] = load_file(folder / "model.safetensors")


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def watch_checkpoints(monkeypatch) -> CheckpointWeights:
    """Records the weights of every checkpoint the stage's trainers save from now on."""
    import align3gr.sft.stage as stage

    weights, build = CheckpointWeights(), stage.sft_trainer

    def watched(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(weights)
        return trainer

    monkeypatch.setattr(stage, "sft_trainer", watched)
    return weights


SCID_LEVELS = ("<a_", "<b_", "<c_")
"""The item code tokens of `test_sft.code_tables`, by level."""
RANKING_DROPS = {"learning_rate": 1e-2, "save_steps": 1, "tasks": ["seq"]}
"""Stream SFT whose step-1 checkpoint ranks the probe's valid users as the initial model does (one hit) and whose
later steps rank them worse (none): the best checkpoint is an early one, its weights unlike the later ones'."""


def test_stream_run_keeps_the_checkpoint_with_the_best_valid_ranking_and_draws_its_curves(
    ml100k_small, scid, tmp_path, monkeypatch
):
    """Every evaluation ranks the probe's valid users; the published model is the checkpoint whose logged
    eval_valid_ndcg@10 is the best (earliest among ties), not the last step's, the closing evaluation's
    final_valid_ndcg@10 names its step, and ranking the probe again with it gives that value."""
    from align3gr.scid.code_tables import load_code_tables
    from align3gr.sft.probe import RankingProbe
    from align3gr.sft.tasks import TaskBuilder

    weights = watch_checkpoints(monkeypatch)
    options = {**SMALL, "max_steps": 4, **RANKING_DROPS}
    config = SFTStageConfig(seq_format="stream", valid_users=24, early_stopping_patience=None, **options)
    out = tmp_path / "sft"
    meta = run_sft(ml100k_small, scid, out, config).meta
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    scheduled = [(row["step"], row["eval_valid_ndcg@10"]) for row in log if "eval_valid_ndcg@10" in row]
    final = [(row["model_step"], row["final_valid_ndcg@10"]) for row in log if "final_valid_ndcg@10" in row]
    assert [step for step, _ in scheduled] == [0, 1, 2, 3, 4] and meta["steps"] == 4
    best_step, best = max(scheduled[1:], key=lambda pair: (pair[1], -pair[0]))
    assert best_step != meta["steps"] and best > scheduled[-1][1]  # the last step's model ranks worse
    assert meta["best"] == {"step": best_step, "ndcg@10": best} and final == [(best_step, pytest.approx(best))]
    published = load_file(out / "model.safetensors")
    assert sorted(weights.saved) == [1, 2, 3, 4]
    assert same_weights(published, weights.saved[best_step]) and not same_weights(published, weights.saved[4])
    assert (out / "training_curves.png").stat().st_size > 0
    dataset = load_dataset(ml100k_small)
    items, users = load_code_tables(out, dataset)
    model, tokenizer = load_for_inference(out)
    builder = TaskBuilder(dataset, items, users, seq_format="stream")
    probe = RankingProbe.of_valid(builder, tokenizer, 24, 20, 32, config.seed, exclude=True)
    assert probe(model)["ndcg@10"] == pytest.approx(best)


def test_training_stops_once_valid_ranking_has_not_improved_for_patience_evaluations(ml100k_small, scid, tmp_path):
    """The evaluation at step 1 sets the best, those at 2 and 3 do not beat it (the ranking drops), and patience 2
    stops training at step 3 of 20, keeping the step-1 checkpoint. The closing evaluation of that model, logged once
    training stopped, is marked as the step-1 model's, not the step-3 one's, and its losses are step 1's."""
    options = {**SMALL, "max_steps": 20, "logging_steps": 5, **RANKING_DROPS}
    config = SFTStageConfig(seq_format="stream", valid_users=16, early_stopping_patience=2, **options)
    out = tmp_path / "sft"
    meta = run_sft(ml100k_small, scid, out, config).meta
    assert meta["steps"] == 3 and meta["stopped_early"] and meta["best"]["step"] == 1
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log if "eval_valid_ndcg@10" in row] == [0, 1, 2, 3]
    losses = [row for row in log if "loss" in row]  # the steps after the last log are logged when training stops
    assert losses[-1]["step"] == 3 and meta["train_loss"]["end"] == losses[-1]["loss"]
    closing = [row for row in log if "model_step" in row]
    assert log[-len(closing) :] == closing and {row["model_step"] for row in closing} == {1}
    assert not any(key.startswith("eval_") for row in closing for key in row)
    kept = {key.removeprefix("final_"): value for row in closing for key, value in row.items() if "_seq_loss" in key}

    def scheduled(step: int) -> dict[str, float]:
        return {
            key.removeprefix("eval_"): row[key]
            for row in log
            if row["step"] == step
            for key in row
            if "_seq_loss" in key
        }

    assert kept == pytest.approx(scheduled(1)) and kept != pytest.approx(scheduled(3))
    assert meta["seq_loss"]["valid_seq"]["end"] == kept["valid_seq_loss"]


class Killed(Exception):
    """The kill of a run, right after it saved a checkpoint."""


class KillAfterSave(TrainerCallback):
    """Kills the run once its checkpoint of step `step` is written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed


def logged_rows(out: Path) -> list[dict]:
    """The training log of `out` without its timings and the closing summary of each `train()` call (whose mean
    loss covers that call's steps only)."""
    rows = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    timing = ("_runtime", "_per_second")
    return [{k: v for k, v in row.items() if not k.endswith(timing)} for row in rows if "train_runtime" not in row]


@pytest.mark.parametrize(
    ("kill_at", "valid_users"), [(2, 16), (3, 16), (6, 0)], ids=["mid_run", "at_the_stop", "at_max_steps_no_probe"]
)
def test_a_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_result(
    kill_at, valid_users, ml100k_small, scid, tmp_path, monkeypatch
):
    """With the probe, as in the patience test, step 1 holds the best ranking and patience 2 stops at step 3; without
    it, max_steps 6 stops there. Killed after its step-2 checkpoint (one evaluation without gain counted), the run
    resumes with that count and without evaluating step 2 again. Killed after the checkpoint of the step where it
    stopped, before the model was published, the resumed run takes no step more. Either way it ends with the same
    steps, log, early-stopping count, kept checkpoint and weights as the uninterrupted run: with the probe, the
    weights of the step-1 checkpoint, not those of the last step (the learning rate is not 0)."""
    import align3gr.sft.stage as stage

    stopping = {"early_stopping_patience": 2, "max_steps": 20, **RANKING_DROPS}
    fixed = {"max_steps": 6, "learning_rate": 5e-3, "save_steps": 2, "tasks": ["seq"]}  # a step more would show
    options = {**SMALL, **(stopping if valid_users else fixed)}
    config = SFTStageConfig(seq_format="stream", valid_users=valid_users, **options)
    build, trainers, weights = stage.sft_trainer, [], CheckpointWeights()

    def run(out: Path, kill_at: int | None = None) -> dict:
        def killable(*args, **kwargs):
            trainer = build(*args, **kwargs)
            trainer.add_callback(weights)
            if kill_at is not None:
                trainer.add_callback(KillAfterSave(kill_at))
            trainers.append(trainer)
            return trainer

        monkeypatch.setattr(stage, "sft_trainer", killable)
        return run_sft(ml100k_small, scid, out, config).meta

    def stopping_count(trainer) -> int | None:
        found = [c for c in trainer.callback_handler.callbacks if isinstance(c, RankingEarlyStopping)]
        return found[0].early_stopping_patience_counter if found else None

    whole = run(tmp_path / "whole" / "sft")
    saved = dict(weights.saved)  # the uninterrupted run's checkpoints
    with pytest.raises(Killed):
        run(tmp_path / "killed" / "sft", kill_at=kill_at)
    assert not (tmp_path / "killed" / "sft").exists()
    resumed = run(tmp_path / "killed" / "sft")
    last = 3 if valid_users else 6
    assert resumed["steps"] == whole["steps"] == last and resumed["stopped_early"] == whole["stopped_early"]
    assert resumed["best"] == whole["best"]
    assert stopping_count(trainers[-1]) == stopping_count(trainers[0])
    log = logged_rows(tmp_path / "killed" / "sft")
    if valid_users:
        assert resumed["best"]["step"] == 1 and resumed["stopped_early"]
        assert [row["step"] for row in log if "eval_valid_ndcg@10" in row] == [0, 1, 2, 3]  # each ranked once
    assert log == logged_rows(tmp_path / "whole" / "sft")
    model = "model.safetensors"
    assert (tmp_path / "killed" / "sft" / model).read_bytes() == (tmp_path / "whole" / "sft" / model).read_bytes()
    published = load_file(tmp_path / "killed" / "sft" / model)
    kept = resumed["best"]["step"] if valid_users else last
    assert same_weights(published, saved[kept])
    if valid_users:
        assert not same_weights(published, saved[last])


def test_a_failure_while_publishing_keeps_the_trained_model_and_a_rerun_publishes_it(
    ml100k_small, scid, tmp_path, monkeypatch
):
    """The disk fills up while the output is written: the output does not appear, the trained model stays whole in
    `sft.work/final/`, and the re-run publishes it as it is, without training again."""
    import align3gr.sft.stage as stage
    import align3gr.training as training

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    out, final = tmp_path / "sft", tmp_path / "sft.work" / "final"
    monkeypatch.setattr(training, "plot_training_curves", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_sft(ml100k_small, scid, out, SFTStageConfig(**SMALL))
    assert not out.exists() and not list(tmp_path.glob(".sft.*"))  # nor a half-written output
    trained = {path.name: path.read_bytes() for path in final.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "training_log.jsonl", "meta.json"} <= set(trained)
    monkeypatch.undo()
    monkeypatch.setattr(stage, "sft_trainer", lambda *args, **kwargs: pytest.fail("trained again"))
    result = run_sft(ml100k_small, scid, out, SFTStageConfig(**SMALL))
    assert not result.up_to_date and result.meta == json.loads(trained["meta.json"]) and result.meta["steps"] == 3
    assert all((out / name).read_bytes() == data for name, data in trained.items())
    assert (out / "training_curves.png").is_file() and (out / "sft_config.yaml").is_file()
    assert not (tmp_path / "sft.work").exists()
    assert run_sft(ml100k_small, scid, out, SFTStageConfig(**SMALL)).up_to_date


class Stopped(Exception):
    """Raised in place of building the trainer, once the stage has tokenized the rows it would train on."""


@pytest.mark.parametrize("holdout", [0, 1])
def test_holdout_last_reaches_the_rows_the_stage_trains_on(holdout, ml100k_small, scid, tmp_path, monkeypatch):
    """`holdout_last` of the stage's config reaches the tokenized rows it hands its trainer: read back from their
    tokens (the user's SCID in the prompt, the listed items' SCIDs in the answer), no task-A window lists a user's
    last training item with 1; with 0, every user's latest window lists it."""
    import align3gr.sft.stage as stage

    seen = {}

    def stop(model, tokenizer, token_ids, builder, arguments, train, evals, config):
        seen.update(tokenizer=tokenizer, train=train)
        raise Stopped

    monkeypatch.setattr(stage, "sft_trainer", stop)
    options = {**SMALL, "tasks": ["seq"], "task_limits": {"seq": None}}
    config = SFTStageConfig(seq_format="stream", holdout_last=holdout, valid_users=0, **options)
    with pytest.raises(Stopped):
        run_sft(ml100k_small, scid, tmp_path / "sft", config)
    dataset = load_dataset(ml100k_small)
    item_of = {tuple(c): i for i, c in json.loads((scid / "item_codes.json").read_text()).items()}
    user_of = {tuple(c): u for u, c in json.loads((scid / "user_codes.json").read_text()).items()}
    last = {user: seq.items[-3] for user, seq in dataset.sequences.items()}  # before the valid and test targets
    listed = {user: set() for user in dataset.sequences}
    for row in seen["train"]:
        tokens = seen["tokenizer"].convert_ids_to_tokens(row["input_ids"])
        prompt = [t for t, answer in zip(tokens, row["completion_mask"], strict=True) if not answer]
        codes = [t for t, answer in zip(tokens, row["completion_mask"], strict=True) if answer and t[:3] in SCID_LEVELS]
        (user,) = {
            user_of[tuple(prompt[k : k + 3])] for k in range(len(prompt) - 2) if tuple(prompt[k : k + 3]) in user_of
        }
        listed[user] |= {item_of[tuple(codes[k : k + 3])] for k in range(0, len(codes), 3)}
    assert all(items for items in listed.values())
    with_last = {user for user, items in listed.items() if last[user] in items}
    assert with_last == (set() if holdout else set(dataset.sequences))


def test_sft_into_its_own_dataset_folder_stops_before_any_work(ml100k_small, tmp_path):
    """`align3gr sft --data D --out D` would replace the dataset with the model once trained."""
    data = tmp_path / "data"
    shutil.copytree(ml100k_small, data)
    before = sorted(p.name for p in data.iterdir())
    with pytest.raises(ConfigError, match="is --data"):
        run_sft(data, tmp_path / "scid", data, SFTStageConfig(max_steps=1))
    assert sorted(p.name for p in data.iterdir()) == before


def test_a_folder_of_the_users_where_the_tiny_base_goes_is_refused(ml100k_small, tmp_path):
    """`model: tiny` builds its base in `OUT_base`, replacing the folder: a user's `models/qwen_base` beside
    `--out models/qwen` is refused before any work, not deleted."""
    mine = tmp_path / "qwen_base"
    mine.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.json"):
        (mine / name).write_text("{}")
    with pytest.raises(ConfigError, match=r"qwen_base: `model: tiny` builds its base model here.*\(vocab\.json\)"):
        run_sft(ml100k_small, tmp_path / "scid", tmp_path / "qwen", SFTStageConfig(max_steps=1))
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]


def test_an_empty_mixture_and_a_max_length_no_next_item_row_fits_are_named(ml100k_small, scid, tmp_path):
    """A mixture with no example is not a max_length problem; rows longer than max_length are dropped, and when
    that drops every next-item row SFT would train without the task it is for."""
    config = SFTStageConfig(**{**SMALL, "tasks": ["seq"], "holdout_last": 1000})
    with pytest.raises(ConfigError, match=r"sft\.tasks \['seq'\] give no example on this dataset: holdout_last=1000"):
        run_sft(ml100k_small, scid, tmp_path / "empty", config)
    config = SFTStageConfig(**{**SMALL, "tasks": ["seq", "item_align"], "max_length": 48})
    with pytest.raises(ConfigError, match=r"max_length=48: no next-item \(task A\) row of train_seq fits in it"):
        run_sft(ml100k_small, scid, tmp_path / "short", config)
    assert not (tmp_path / "short").exists()
