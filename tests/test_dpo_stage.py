"""The progressive DPO stages on a slice of MovieLens-100K: outputs, rows, references, resumption, CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import PartialState
from launching import accelerate_launch
from safetensors.torch import load_file
from test_sft import code_tables
from test_sft_lora import tiny_llama  # noqa: F401 (fixture)
from test_sft_stage import KillAfterSave, Killed

from align3gr.config import config_from_sources
from align3gr.data.dataset import load_dataset
from align3gr.dpo.arguments import dpo_arguments, load_policy
from align3gr.dpo.config import LOSS_OPTIONS, DPOStageConfig
from align3gr.dpo.stage import STAGE_FILES, copy_start_model, guarded, run_dpo, stage_fingerprint
from align3gr.dpo.trainer import SoftmaxDPOTrainer
from align3gr.errors import ConfigError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.io import read_json, write_json
from align3gr.models.loading import load_for_inference
from align3gr.scid.code_tables import write_code_tables
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.stage import run_sft

ROOT = Path(__file__).resolve().parent.parent
QUICK = dict(max_steps=2, num_rejected=4, per_device_train_batch_size=2, generation_batch_size=64, learning_rate=1e-4)
VALID_OPTIONS = {"beam_size": 10, "batch_size": 64}
VALID = EvaluateConfig(**VALID_OPTIONS)


@pytest.fixture(scope="module")
def sft_run(ml100k_small, tmp_path_factory):
    """A short SFT of the tiny model on hand-made unique codes (the tokenizer stage has its own tests)."""
    root = tmp_path_factory.mktemp("dpo_stage")
    (root / "scid").mkdir()
    items, users = code_tables(load_dataset(ml100k_small))
    (root / "scid" / "item_codes.json").write_text(json.dumps(items))
    (root / "scid" / "user_codes.json").write_text(json.dumps(users))
    config = SFTStageConfig(max_steps=10, max_examples_per_task=100, tiny_vocab_size=600, tiny_hidden_size=32,
                            eval_examples=8, per_device_train_batch_size=16)  # fmt: skip
    run_sft(ml100k_small, root / "scid", root / "sft", config)
    return root


def test_stages_write_their_outputs_rows_and_valid_metrics(ml100k_small, sft_run, tmp_path):
    results = run_dpo(
        ml100k_small,
        sft_run / "sft",
        tmp_path / "dpo",
        DPOStageConfig(stages=["sp_easy", "rf_easy"], **QUICK),
        evaluate=VALID,
    )
    dataset = load_dataset(ml100k_small)
    for result in results:
        folder = tmp_path / "dpo" / result.name
        assert not result.up_to_date and (folder / "model.safetensors").is_file()
        assert (folder / "item_codes.json").read_bytes() == (sft_run / "scid" / "item_codes.json").read_bytes()
        metrics = read_json(tmp_path / "eval" / f"dpo_{result.name}" / "metrics.json")
        assert metrics["split"] == "valid" and metrics["num_users"] == len(dataset.sequences)
        assert result.valid_metrics["recall@10"] == metrics["recall@10"]
        log = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]
        last = [row for row in log if "loss" in row][-1]  # logged at the last step, though logging_steps is 10
        assert last["step"] == result.meta["steps"] == QUICK["max_steps"]
        assert result.meta["train_loss"]["end"] == last["loss"]  # both "end"s of the same, last, window
        assert result.meta["reward_accuracy"]["end"] == last["rewards/accuracies"]
        rows = [json.loads(line) for line in (folder / "preferences.jsonl").read_text().splitlines()]
        assert rows and all(r["chosen"] not in r["rejected"] and r["rejected"] for r in rows)
        for row in rows:  # prompts and chosen items come from the train split only
            train = dataset.sequences[row["user_id"]].items[:-2]
            assert row["chosen"] in train and set(row["history"]) <= set(train)
    sp_rows = [
        json.loads(line) for line in (tmp_path / "dpo" / "sp_easy" / "preferences.jsonl").read_text().splitlines()
    ]
    item_codes = read_json(sft_run / "scid" / "item_codes.json")
    assert all(item_codes[r][0] != item_codes[row["chosen"]][0] for row in sp_rows for r in row["rejected"])
    sp_data = results[0].meta["preference_data"]  # the policy's own generations only, never a liked training item
    assert sp_data["filled"] == 0 and sp_data["generated_share"] == 1.0
    for row in sp_rows:
        seq = dataset.sequences[row["user_id"]]
        liked = {i for i, level in zip(seq.items[:-2], seq.feedback, strict=False) if level == "liked"}
        assert not liked & set(row["rejected"])
    rf_rows = [
        json.loads(line) for line in (tmp_path / "dpo" / "rf_easy" / "preferences.jsonl").read_text().splitlines()
    ]
    for row in rf_rows:
        seq = dataset.sequences[row["user_id"]]
        level = dict(zip(seq.items, seq.feedback, strict=True))
        assert level[row["chosen"]] == "liked" and all(level[r] == "disliked" for r in row["rejected"])
        assert all(seq.items.index(r) < seq.items.index(row["chosen"]) for r in row["rejected"])


def test_each_stage_is_referenced_to_the_previous_stages_output(ml100k_small, sft_run, tmp_path):
    run_dpo(
        ml100k_small, sft_run / "sft", tmp_path / "dpo", DPOStageConfig(stages=["sp_easy"], **QUICK), evaluate=VALID
    )
    previous = tmp_path / "dpo" / "sp_easy"
    policy, tokenizer = load_policy(previous)
    from datasets import Dataset

    rows = Dataset.from_list([{"prompt": "p", "chosen": "<a_1><b_1><c_1>", "rejected": ["<a_2><b_1><c_1>"]}])
    trainer = SoftmaxDPOTrainer(model=policy, args=dpo_arguments(DPOStageConfig(**QUICK), tmp_path / "work"),
                                train_dataset=rows, processing_class=tokenizer)  # fmt: skip
    assert trainer.ref_model.config._name_or_path == str(previous)
    saved, _ = load_policy(previous)
    for (name, ref), (_, kept) in zip(trainer.ref_model.named_parameters(), saved.named_parameters(), strict=True):
        assert torch.equal(ref, kept), name


def test_a_stage_without_preference_rows_hands_on_its_start_model(ml100k_small, sft_run, tmp_path):
    """A hard band that rounds to no item (hard_share of a small catalogue) leaves sp_hard without a row: the stage
    trains nothing and hands on its start model, the guard aside, and the next stage trains from it."""
    config = DPOStageConfig(stages=["sp_hard", "rf_easy"], bucketing="similarity", hard_share=1e-6, guard=True,
                            **QUICK)  # fmt: skip
    hard, easy = run_dpo(ml100k_small, sft_run / "sft", tmp_path / "dpo", config, evaluate=VALID)
    meta = read_json(tmp_path / "dpo" / "sp_hard" / "meta.json")
    assert meta["handed_on"] == "no preference rows" and meta["steps"] == 0 and "guard" not in meta
    assert meta["preference_data"]["rows"] == 0
    for name in ("model.safetensors", "config.json", "tokenizer.json", "item_codes.json"):
        assert (tmp_path / "dpo" / "sp_hard" / name).read_bytes() == (sft_run / "sft" / name).read_bytes(), name
    assert (tmp_path / "dpo" / "sp_hard" / "preferences.jsonl").read_text() == ""
    assert read_json(tmp_path / "dpo" / "rf_easy" / "meta.json")["steps"] > 0 and not hard.up_to_date
    again = run_dpo(ml100k_small, sft_run / "sft", tmp_path / "dpo", config, evaluate=VALID)
    assert [result.up_to_date for result in again] == [True, True]


def test_where_a_stage_loads_model_code_from_is_not_what_it_depends_on(ml100k_small, sft_run):
    """`trust_remote_code` is left out of a stage's fingerprint as of the pipeline's step keys, so `align3gr dpo`
    and the pipeline agree on which stages are current; an option of the stage's training is not."""
    dataset = load_dataset(ml100k_small)
    fingerprint = stage_fingerprint(sft_run / "sft", dataset, "sp_easy", DPOStageConfig(), VALID)
    trusting = EvaluateConfig(**VALID_OPTIONS, trust_remote_code=True)
    same = stage_fingerprint(sft_run / "sft", dataset, "sp_easy", DPOStageConfig(trust_remote_code=True), trusting)
    assert same == fingerprint
    assert stage_fingerprint(sft_run / "sft", dataset, "sp_easy", DPOStageConfig(beta=0.2), VALID) != fingerprint


def test_rf_stages_on_data_without_feedback_stop_before_the_first_stage(ml100k_small, sft_run, tmp_path):
    """`align3gr dpo` alone (the pipeline has its own check): a self-play stage before an RF one does not train
    first only for the RF stage to fail."""
    data = tmp_path / "data"
    shutil.copytree(ml100k_small, data)
    rows = [json.loads(line) | {"feedback": None} for line in (data / "sequences.jsonl").read_text().splitlines()]
    (data / "sequences.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = DPOStageConfig(stages=["sp_random", "rf_easy"], **QUICK)
    with pytest.raises(ConfigError, match=rf"stages rf_easy: RF-DPO needs feedback levels.* in {data}"):
        run_dpo(data, sft_run / "sft", tmp_path / "dpo", config, evaluate=VALID)
    assert not (tmp_path / "dpo").exists() or not any((tmp_path / "dpo").iterdir())


def test_a_run_stopped_between_stages_resumes_at_the_next(ml100k_small, sft_run, tmp_path):
    first = run_dpo(
        ml100k_small, sft_run / "sft", tmp_path / "dpo", DPOStageConfig(stages=["rf_easy"], **QUICK), evaluate=VALID
    )
    meta = read_json(tmp_path / "dpo" / "rf_easy" / "meta.json")
    both = run_dpo(
        ml100k_small,
        sft_run / "sft",
        tmp_path / "dpo",
        DPOStageConfig(stages=["rf_easy", "rf_hard"], **QUICK),
        evaluate=VALID,
    )
    assert [r.up_to_date for r in both] == [True, False]
    assert read_json(tmp_path / "dpo" / "rf_easy" / "meta.json") == meta
    assert both[0].valid_metrics == first[0].valid_metrics
    assert read_json(tmp_path / "dpo" / "rf_hard" / "meta.json")["start"] == str(tmp_path / "dpo" / "rf_easy")
    changed = run_dpo(
        ml100k_small,
        sft_run / "sft",
        tmp_path / "dpo",
        DPOStageConfig(stages=["rf_easy"], **{**QUICK, "beta": 0.5}),
        evaluate=VALID,
    )
    assert not changed[0].up_to_date


@pytest.mark.parametrize("killed_at", [1, QUICK["max_steps"]], ids=["mid_stage", "last_step"])
def test_a_killed_stage_resumes_to_the_uninterrupted_runs_weights(
    ml100k_small, sft_run, tmp_path, monkeypatch, killed_at
):
    """Killed after the checkpoint of a step before its last (its data order, optimiser and random states restored
    from there), or of its last step before the model was published (where Transformers' loop alone would take one
    step more), a stage resumes to the weights, step count and valid metrics of an uninterrupted run."""
    import align3gr.dpo.trainer as trainers  # the stage imports its trainer class from there when it runs

    config = DPOStageConfig(stages=["sp_easy"], guard=False, **{**QUICK, "save_steps": 1})
    build = trainers.SoftmaxDPOTrainer

    def killed_after_the_save(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(KillAfterSave(killed_at))
        return trainer

    run_dpo(ml100k_small, sft_run / "sft", tmp_path / "whole", config, evaluate=VALID)
    monkeypatch.setattr(trainers, "SoftmaxDPOTrainer", killed_after_the_save)
    with pytest.raises(Killed):
        run_dpo(ml100k_small, sft_run / "sft", tmp_path / "killed", config, evaluate=VALID)
    monkeypatch.setattr(trainers, "SoftmaxDPOTrainer", build)
    last = max(int(p.name.split("-")[1]) for p in (tmp_path / "killed" / "sp_easy.work").glob("checkpoint-*"))
    assert last == killed_at  # the kill came where asked: the resumed run trains the steps after it
    (resumed,) = run_dpo(ml100k_small, sft_run / "sft", tmp_path / "killed", config, evaluate=VALID)
    whole = read_json(tmp_path / "whole" / "sp_easy" / "meta.json")
    assert resumed.meta["steps"] == whole["steps"] == QUICK["max_steps"]
    assert resumed.valid_metrics == whole["valid_metrics"]
    killed, whole_model = (tmp_path / run / "sp_easy" / "model.safetensors" for run in ("killed", "whole"))
    assert killed.read_bytes() == whole_model.read_bytes()


def test_bad_stage_options(ml100k_small, tmp_path):
    for options, pattern in (
        ({"stages": []}, "stages is empty"),
        ({"stages": ["sp_extreme"]}, "unknown DPO stage 'sp_extreme'"),
        ({"stages": ["sp_easy", "sp_easy"]}, "may appear once"),
        ({"num_rejected": 0}, "num_rejected=0: must be >= 1"),
        ({"similarity_sample": -5}, "similarity_sample=-5: must be >= 0"),
        ({"shared_prompt_forward": "fast"}, "shared_prompt_forward='fast'"),
    ):
        with pytest.raises(ConfigError, match=pattern):
            DPOStageConfig(**options).validate()
    with pytest.raises(ConfigError, match="not an sft/ or DPO stage output"):
        run_dpo(ml100k_small, tmp_path, tmp_path / "dpo")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launcher", "flags"),
    [
        (["--config_file", "accelerate_configs/deepspeed_zero2.yaml"], []),
        (["--config_file", "accelerate_configs/deepspeed_zero3.yaml"], []),
        (["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
         ["--precompute-ref-log-probs"]),
    ],
    ids=["deepspeed_zero2", "deepspeed_zero3", "ddp_precomputed_reference"],
)  # fmt: skip
def test_accelerate_launch_runs_a_self_play_stage_on_two_cpu_processes(
    launcher, flags, ml100k_small, sft_run, tmp_path
):
    """Under ZeRO-3 the policy loads partitioned: it generates its candidates on gathered weights, and the valid
    evaluation loads the trained model whole. With the reference precomputed under DDP, both processes read the
    reference log-probabilities the main one stored. Either way, the first step's reference is the policy itself:
    a row's loss is log(1 + its rejected count)."""
    out = tmp_path / "dpo"
    flags = [*flags, *(f"--{k.replace('_', '-')}={v}" for k, v in QUICK.items())]
    evaluate = tmp_path / "evaluate.yaml"
    evaluate.write_text(json.dumps({"evaluate": VALID_OPTIONS}))
    command = accelerate_launch(
        *launcher, "recipes/dpo.py",
        "--data", str(ml100k_small), "--start", str(sft_run / "sft"), "--out", str(out), "--stages", "sp_easy",
        "--config", str(evaluate), *flags,
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Progressive DPO") == 1  # the table comes from the main process only
    meta = read_json(out / "sp_easy" / "meta.json")
    assert meta["steps"] == QUICK["max_steps"] and meta["valid_metrics"]["valid_rate"] == 1.0
    assert math.log(2) - 1e-4 <= meta["train_loss"]["start"] <= math.log(1 + QUICK["num_rejected"]) + 1e-4
    single = run_dpo(
        ml100k_small, sft_run / "sft", tmp_path / "single", DPOStageConfig(stages=["sp_easy"], **QUICK), evaluate=VALID
    )
    two = [json.loads(line) for line in (out / "sp_easy" / "preferences.jsonl").read_text().splitlines()]
    one = [
        json.loads(line) for line in (tmp_path / "single" / "sp_easy" / "preferences.jsonl").read_text().splitlines()
    ]
    assert two == one and single[0].meta["preference_data"] == meta["preference_data"]


def test_a_lora_adapter_continues_as_an_adapter(ml100k_small, sft_run, tiny_llama, tmp_path):  # noqa: F811
    """An untied Llama trained with LoRA: each stage trains and saves the adapter (with its SCID rows), never the
    frozen reference copy, and the stage's output loads for inference like the SFT output."""
    options = {"max_steps": 2, "max_examples_per_task": 8, "tasks": ["seq"], "eval_examples": 4, "warmup_steps": 0}
    config = SFTStageConfig(model=str(tiny_llama), use_lora=True, lora_target_modules=["q_proj", "v_proj"], **options)
    run_sft(ml100k_small, sft_run / "scid", tmp_path / "sft", config)
    (result,) = run_dpo(
        ml100k_small, tmp_path / "sft", tmp_path / "dpo", DPOStageConfig(stages=["sp_easy"], **QUICK), evaluate=VALID
    )
    folder = tmp_path / "dpo" / "sp_easy"
    assert (folder / "adapter_config.json").is_file() and not (folder / "ref").exists()
    assert result.meta["adapter"] and result.valid_metrics["valid_rate"] == 1.0
    rows = result.meta["vocabulary"]["embedding_rows"]
    assert not [k for k, v in load_file(folder / "adapter_model.safetensors").items() if v.shape[0] == rows]
    model, _ = load_for_inference(folder)
    assert type(model).__name__ == "LlamaForCausalLM"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="LoRA trains under ZeRO-3 there")
def test_an_adapter_start_under_zero3_stops_on_cpu_processes_before_any_work(ml100k_small, sft_run, tmp_path):
    """PEFT gathers a LoRA model's trainable SCID rows on CUDA under ZeRO-3: without CUDA the stage says so before
    it generates a row, where PEFT would fail deep in loading."""
    options = {"max_steps": 1, "max_examples_per_task": 8, "tasks": ["seq"], "eval_examples": 4, "warmup_steps": 0}
    run_sft(ml100k_small, sft_run / "scid", tmp_path / "sft", SFTStageConfig(use_lora=True, **options))
    command = accelerate_launch(
        "--config_file", "accelerate_configs/deepspeed_zero3.yaml", "recipes/dpo.py", "--data", str(ml100k_small),
        "--start", str(tmp_path / "sft"), "--out", str(tmp_path / "dpo"), "--stages", "sp_easy",
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "DPO stage sp_easy (its start is an adapter) trains a LoRA adapter under DeepSpeed ZeRO-3" in done.stderr
    assert not (tmp_path / "dpo" / "sp_easy").exists() and not (tmp_path / "dpo" / "sp_easy.work").exists()


def test_the_guard_hands_on_the_start_model_when_valid_falls(ml100k_small, sft_run, tmp_path):
    run_dpo(
        ml100k_small, sft_run / "sft", tmp_path / "dpo", DPOStageConfig(stages=["sp_easy"], **QUICK), evaluate=VALID
    )
    out, start = tmp_path / "dpo" / "sp_easy", sft_run / "sft"
    meta = read_json(out / "meta.json")
    trained = {p.name: p.read_bytes() for p in out.iterdir()}
    higher = {k: v + 1 for k, v in meta["valid_metrics"].items()}
    kept = guarded(start, out, dict(meta), higher, ["recall@10", "ndcg@10"])
    assert kept["guard"]["kept"] == "start" and kept["guard"]["fallen"] == ["recall@10", "ndcg@10"]
    assert kept["valid_metrics"] == higher and kept["guard"]["trained_valid_metrics"] == meta["valid_metrics"]
    assert read_json(out / "meta.json") == kept
    for name, content in trained.items():
        now = (out / name).read_bytes()
        if name in STAGE_FILES - {"meta.json"}:
            assert now == content, name
        elif name != "meta.json" and (start / name).is_file():
            assert now == (start / name).read_bytes(), name
    assert (out / "model.safetensors").read_bytes() != trained["model.safetensors"]
    policy, _ = load_for_inference(out)
    sft, _ = load_for_inference(start)
    for (name, a), (_, b) in zip(policy.named_parameters(), sft.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_the_guard_keeps_a_stage_that_does_not_lower_valid(ml100k_small, sft_run, tmp_path):
    run_dpo(
        ml100k_small, sft_run / "sft", tmp_path / "dpo", DPOStageConfig(stages=["sp_easy"], **QUICK), evaluate=VALID
    )
    out = tmp_path / "dpo" / "sp_easy"
    meta = read_json(out / "meta.json")
    weights = (out / "model.safetensors").read_bytes()
    equal = dict(meta["valid_metrics"])
    kept = guarded(sft_run / "sft", out, dict(meta), equal, ["recall@10", "ndcg@10"])
    assert kept["guard"]["kept"] == "trained" and kept["valid_metrics"] == meta["valid_metrics"]
    assert (out / "model.safetensors").read_bytes() == weights


def test_a_guarded_chain_compares_each_stage_with_the_model_it_started_from(ml100k_small, sft_run, tmp_path):
    config = DPOStageConfig(stages=["sp_easy", "rf_easy"], guard=True, **QUICK)
    results = run_dpo(ml100k_small, sft_run / "sft", tmp_path / "dpo", config, evaluate=VALID)
    sft_valid = read_json(tmp_path / "eval" / "dpo_sp_easy_start" / "metrics.json")
    before = {k: v for k, v in sft_valid.items() if "@" in k or k == "valid_rate"}
    for result, start in zip(results, (sft_run / "sft", tmp_path / "dpo" / "sp_easy"), strict=True):
        guard = result.meta["guard"]
        assert guard["start_valid_metrics"] == before
        trained = read_json(tmp_path / "eval" / f"dpo_{result.name}" / "metrics.json")
        assert guard["trained_valid_metrics"]["ndcg@10"] == trained["ndcg@10"]
        fell = [m for m in ("recall@10", "ndcg@10") if guard["trained_valid_metrics"][m] < before[m]]
        assert guard["fallen"] == fell and guard["kept"] == ("start" if fell else "trained")
        same = (result.path / "model.safetensors").read_bytes() == (start / "model.safetensors").read_bytes()
        assert same == bool(fell)
        assert result.valid_metrics == (before if fell else guard["trained_valid_metrics"])
        before = result.valid_metrics
    again = run_dpo(ml100k_small, sft_run / "sft", tmp_path / "dpo", config, evaluate=VALID)
    assert [r.up_to_date for r in again] == [True, True] and [r.meta for r in again] == [r.meta for r in results]
    assert not (tmp_path / "eval" / "dpo_rf_easy_start").exists()  # its start's metrics: sp_easy's, same evaluation

    other = EvaluateConfig(**{**VALID_OPTIONS, "beam_size": 12})  # another protocol: sp_easy's metrics do not apply
    one = DPOStageConfig(stages=["rf_easy"], guard=True, **QUICK)
    (result,) = run_dpo(ml100k_small, tmp_path / "dpo" / "sp_easy", tmp_path / "other", one, evaluate=other)
    remeasured = read_json(tmp_path / "eval" / "dpo_rf_easy_start" / "metrics.json")  # eval/ beside the out folder
    assert remeasured["config"]["beam_size"] == 12
    assert result.meta["guard"]["start_valid_metrics"]["ndcg@10"] == remeasured["ndcg@10"]

    data = tmp_path / "other_data"  # the same protocol on other data (a fingerprint of other texts, say)
    shutil.copytree(ml100k_small, data)
    write_json(data / "meta.json", {**read_json(data / "meta.json"), "fingerprint": "other data"})
    run_dpo(data, tmp_path / "dpo" / "sp_easy", tmp_path / "third" / "dpo", one, evaluate=VALID)
    assert (tmp_path / "third" / "eval" / "dpo_rf_easy_start" / "metrics.json").is_file()  # measured again


def test_the_guard_copies_every_file_of_a_start_model_saved_in_other_shards(tmp_path):
    """The start model's own files, whatever the trained model's (here one file against two shards), then the
    stage's files; neither the start's stage files nor the trained model's."""
    previous, out, folder = tmp_path / "sft", tmp_path / "sp_easy", tmp_path / "published"
    start = {
        "model-00001-of-00002.safetensors": "start 1",
        "model-00002-of-00002.safetensors": "start 2",
        "model.safetensors.index.json": "start index",
        "config.json": "start config",
    }
    stage = {"meta.json": "{}", "dpo_config.yaml": "dpo", "preferences.jsonl": "rows", "item_codes.json": "codes"}
    files = {
        **{previous / name: text for name, text in start.items()},
        previous / "meta.json": "start meta",
        previous / "sft_config.yaml": "sft",
        previous / "training_log.jsonl": "start log",
        **{out / name: text for name, text in stage.items()},
        out / "model.safetensors": "trained",
        out / "config.json": "trained config",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    folder.mkdir()
    copy_start_model(previous, out, folder)
    assert {path.name: path.read_text() for path in folder.iterdir()} == start | stage


def test_prefix_thresholds_beyond_the_scid_length_stop_the_run_before_any_candidate(tmp_path):
    """hard_min must stay below the length of the start model's SCIDs, checked before the first stage reads the data
    or generates: here 3-level codes and a self-play stage after an RF one."""
    start = tmp_path / "sft"
    start.mkdir()
    (start / "meta.json").write_text("{}")
    write_code_tables(start, {"i1": ["<a_1>", "<b_1>", "<c_1>"], "i2": ["<a_1>", "<b_2>", "<c_1>"]}, {})
    config = DPOStageConfig(stages=["rf_easy", "sp_hard"], hard_min=3)
    with pytest.raises(ConfigError, match=r"hard_min=3 for 3-level SCIDs \(.*sft/item_codes\.json\)"):
        run_dpo(tmp_path / "data", start, tmp_path / "dpo", config)
    assert not (tmp_path / "dpo").exists() and not (tmp_path / "dpo").with_suffix(".work").exists()
    DPOStageConfig(stages=["rf_easy"], hard_min=3).check_code_length(3, "item_codes.json")  # no prefix buckets
    DPOStageConfig(bucketing="similarity", hard_min=3).check_code_length(3, "item_codes.json")


@pytest.mark.parametrize("option", sorted(LOSS_OPTIONS))
def test_training_args_of_trls_other_losses_are_refused_when_the_config_is_read(tmp_path, option):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"dpo": {"training_args": {option: 1}}}))
    with pytest.raises(ConfigError, match=rf"training_args: '{option}' cannot be set here \(the loss is Eq\. 3"):
        config_from_sources(DPOStageConfig, path)


def test_guard_metrics_must_be_valid_split_metrics():
    """The name when the dpo section is read; K against the run's evaluate.ks once they are known."""
    with pytest.raises(ConfigError, match="guard_metrics: 'mrr@10'"):
        DPOStageConfig(guard_metrics=["mrr@10"]).validate()
    config = DPOStageConfig(guard=True, guard_metrics=["recall@20"])
    config.validate()
    with pytest.raises(ConfigError, match="guard_metrics: 'recall@20'"):
        config.valid_evaluation(EvaluateConfig())


def test_a_later_stage_folder_of_other_files_stops_the_chain_before_the_first_stage(tmp_path):
    start = tmp_path / "sft"
    start.mkdir()
    (start / "meta.json").write_text("{}")
    foreign = tmp_path / "eval" / "dpo_sp_medium"
    foreign.mkdir(parents=True)
    (foreign / "notes.md").write_text("keep me")
    config = DPOStageConfig(stages=["sp_easy", "sp_medium"])
    with pytest.raises(ConfigError, match=r"dpo_sp_medium: the output folder holds files but no metrics\.json"):
        run_dpo(tmp_path / "data", start, tmp_path / "dpo", config)
    assert not (tmp_path / "dpo").exists() and (foreign / "notes.md").read_text() == "keep me"


def test_a_stage_stopped_while_publishing_is_published_by_the_rerun_without_training(
    ml100k_small, sft_run, tmp_path, monkeypatch
):
    """The disk fills up while the stage's output is written: nothing is published, the trained model stays whole in
    the work folder, and the re-run publishes it (and checks it on valid) without generating rows or training."""
    import align3gr.dpo.stage as stage
    import align3gr.training as training

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    config = DPOStageConfig(stages=["rf_easy"], **QUICK)
    monkeypatch.setattr(training, "plot_training_curves", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_dpo(ml100k_small, sft_run / "sft", tmp_path / "dpo", config, evaluate=VALID)
    assert not (tmp_path / "dpo" / "rf_easy").exists()
    monkeypatch.undo()
    monkeypatch.setattr(stage, "stage_examples", lambda *args: pytest.fail("generated the rows again"))
    (result,) = run_dpo(ml100k_small, sft_run / "sft", tmp_path / "dpo", config, evaluate=VALID)
    assert not result.up_to_date and read_json(tmp_path / "dpo" / "rf_easy" / "meta.json")["stage"] == "rf_easy"
    assert (tmp_path / "dpo" / "rf_easy" / "preferences.jsonl").is_file()
    assert not (tmp_path / "dpo" / "rf_easy.work").exists()
    monkeypatch.undo()
    clean = run_dpo(ml100k_small, sft_run / "sft", tmp_path / "again", config, evaluate=VALID)
    assert clean[0].valid_metrics == result.valid_metrics


def test_the_policy_loads_in_the_dtype_and_attention_sft_trained_it_with(sft_run, tmp_path):
    """A model SFT trained in bf16 with eager attention is trained on in bf16 with eager attention (not in float32,
    which doubles a 7B policy's memory), on this process's device."""
    start = tmp_path / "sft"
    shutil.copytree(sft_run / "sft", start)
    meta = json.loads((start / "meta.json").read_text())
    meta["config"] |= {"dtype": "bfloat16", "attn_implementation": "eager"}
    (start / "meta.json").write_text(json.dumps(meta))
    policy, _ = load_policy(start)
    assert policy.dtype == torch.bfloat16 and policy.config._attn_implementation == "eager"
    assert policy.device == PartialState().device
    policy, _ = load_policy(sft_run / "sft")
    assert policy.dtype == torch.float32
    meta["config"]["attn_implementation"] = "flash_attention_2"  # SFT on GPUs: no custom mask, which packed needs
    (start / "meta.json").write_text(json.dumps(meta))
    policy, _ = load_policy(start, "packed")
    assert policy.config._attn_implementation == "sdpa"
