"""Plan-time checks: on interaction data without ratings (LC-Rec format), the pipeline (and the ablation ladder)
stops before any work with one error listing every unmet need, or with `--skip-unmet` leaves out the stages whose
input is absent and says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from test_builder_lcrec import write_lcrec

from align3gr.cli import main
from align3gr.data.dataset import load_dataset
from align3gr.errors import ConfigError
from align3gr.pipeline import load_pipeline_config, run_pipeline
from align3gr.pipeline.checks import Checked, check_plan, data_needs, resolved
from align3gr.pipeline.config import PipelineConfig
from align3gr.pipeline.plan import Plan, in_run
from align3gr.run_lock import LOCK_FILE, STAGE_LOCK_FILE


def write_config(folder: Path, **sections: dict) -> Path:
    """A pipeline config over the LC-Rec fixture (no ratings, no reviews) with `sections` merged in."""
    config = {
        "source": {"builder": "lcrec", "source": str(write_lcrec(folder / "raw"))},
        "data": {"user_k": 3, "item_k": 1},
        "tokenize": {"codebook_size": 4, "user_codebook_size": 4},
        "dpo": {"stages": ["sp_easy", "rf_easy", "rf_hard"], "num_rejected": 2, "candidates": 4},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path = folder / f"config{len(list(folder.glob('config*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, int]:
    """Every path under `folder` with its modification time."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_unmet_needs_stop_the_run_before_any_work_each_listed(tmp_path, capsys):
    run = tmp_path / "run"
    missing = write_config(tmp_path, sft={"model": str(tmp_path / "no_model")})
    with pytest.raises(ConfigError, match=r"sft\.model=.*no_model': expected a local model folder") as error:
        run_pipeline(missing, run)
    assert "dpo.stages" not in str(error.value) and not run.exists()  # the data is not built: nothing was touched

    with pytest.raises(ConfigError, match=r"dpo\.stages rf_easy, rf_hard: RF-DPO needs feedback levels"):
        run_pipeline(write_config(tmp_path), run)
    stopped_after_data = [LOCK_FILE, STAGE_LOCK_FILE, "data", "pipeline_state.json"]
    assert sorted(p.name for p in run.iterdir()) == stopped_after_data

    before = snapshot(run)
    encoder = {"semantic_model": str(tmp_path / "no_encoder")}
    prefix = {"bucketing": "prefix", "hard_min": 3}  # 3-level SCIDs (a 4th only if collisions overflow a prefix)
    codebook = {"codebook_size": 256}  # more first-level codes than the fixture's 8 items
    config = write_config(
        tmp_path, sft={"model": str(tmp_path / "no_model")}, embed=encoder, dpo=prefix, tokenize=codebook
    )
    assert main(["pipeline", "--config", str(config), "--run-dir", str(run)]) == 2
    error = capsys.readouterr().err
    assert "the run cannot start; unmet needs:" in error
    unmet = [line for line in error.splitlines() if line.startswith("  - ")]
    assert len(unmet) == 5
    assert unmet[0].startswith("  - sft.model=") and "expected a local model folder with config.json" in unmet[0]
    assert unmet[1].startswith("  - embed: semantic_model=") and "no_encoder" in unmet[1]
    assert unmet[2].startswith("  - dpo: SP-DPO bucket thresholds need 0 < medium_min <= hard_min < levels")
    assert unmet[2].endswith("hard_min=3 for 3-level SCIDs (tokenize.levels)")
    assert unmet[3].startswith("  - dpo.stages rf_easy, rf_hard: RF-DPO needs feedback levels, and the dataset has")
    assert unmet[3].endswith("(--skip-unmet leaves it out)")
    assert unmet[4].startswith("  - tokenize.codebook_size=256 exceeds the 8 items; set codebook_size <= 8 (of ")
    assert snapshot(run) == before  # the data was current: checked before the data step, nothing written


def write_larger_lcrec(folder: Path) -> Path:
    """An LC-Rec dataset large enough for every stage: 30 users of 8 interactions over 40 items in 5 categories."""
    folder.mkdir(parents=True)
    interactions = {str(u): [(7 * u + 3 * k) % 40 for k in range(8)] for u in range(30)}
    items = {str(i): {"title": f"Toy {i}", "description": "Soft and red.", "categories": f"Toys,Kind {i % 5}"}
             for i in range(40)}  # fmt: skip
    (folder / "T.inter.json").write_text(json.dumps(interactions))
    (folder / "T.item.json").write_text(json.dumps(items))
    return folder


@pytest.mark.slow
def test_skip_unmet_runs_without_the_stages_whose_input_is_absent_and_says_so(tmp_path, capsys):
    tiny = {"embed": {"cf_epochs": 1, "cf_dim": 8},
            "tokenize": {"codebook_size": 8, "user_codebook_size": 4, "code_dim": 4, "hidden_dims": [8],
                         "phase1_max_epochs": 1, "phase2_epochs": 1},
            "sft": {"tiny_vocab_size": 300, "tiny_hidden_size": 16, "tiny_layers": 1, "max_steps": 2, "save_steps": 2,
                    "per_device_train_batch_size": 8, "eval_examples": 4},
            "evaluate": {"batch_size": 8}, "dpo": {"stages": ["rf_easy", "rf_hard"]},
            "source": {"source": str(write_larger_lcrec(tmp_path / "larger"))}}  # fmt: skip
    config, run = write_config(tmp_path, **tiny), tmp_path / "run"
    assert main(["pipeline", "--config", str(config), "--run-dir", str(run), "--skip-unmet"]) == 0
    note = "rf_easy, rf_hard: RF-DPO needs feedback levels, and the dataset has none (no ratings or reviews)"
    assert f"\nskipped {note}\n" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped"] == [note]
    assert [row["stage"] for row in summary["stages"]] == ["data", "embed", "tokenize", "popular", "sasrec", "sft"]
    assert f"\n- skipped {note}\n" in (run / "summary.md").read_text()
    assert not (run / "dpo").exists()

    assert main(["ablate", "--config", str(config), "--run-dir", str(run)]) == 2
    assert "rf_easy, rf_hard: RF-DPO needs feedback levels" in capsys.readouterr().err
    sft_written = (run / "sft" / "meta.json").stat().st_mtime_ns
    assert main(["ablate", "--config", str(config), "--run-dir", str(run), "--skip-unmet"]) == 0
    out = capsys.readouterr().out
    assert f"\nskipped {note}\nno rung +RF-DPO: nothing of the run's config to add there" in out
    ladder = json.loads((run / "ablation" / "ladder.json").read_text())
    assert ladder["skipped"] == [note] and ladder["left_out"] == ["+RF-DPO"]
    assert [row["rung"] for row in ladder["rows"]][-3:] == ["+B2", "+Softmax-DPO", "+SP-DPO"]
    assert ladder["rows"][-3]["recall@10"] == summary["stages"][-1]["recall@10"]  # +B2 is the run's own SFT
    assert (run / "sft" / "meta.json").stat().st_mtime_ns == sft_written
    assert "- no rung +RF-DPO" in (run / "ablation" / "ladder.md").read_text()


def test_skip_unmet_leaves_out_what_it_can_and_stops_on_the_rest(tmp_path):
    run = tmp_path / "run"
    config = load_pipeline_config(write_config(tmp_path, sft={"tasks": ["seq", "user_align"]}))

    def check(config: PipelineConfig, build: bool = False) -> Checked | None:
        return check_plan(Plan(config, run / "config.yaml", run, in_run(run)), skip_unmet=True, build=build)

    assert check(config) is None  # the data is not built yet: the environment is all it checks
    checked = check(config, build=True)
    assert checked.config.dpo.stages == ["sp_easy"] and checked.dpo and checked.config.sft == config.sft
    assert checked.skipped == ("rf_easy, rf_hard: RF-DPO needs feedback levels, and the dataset has none (no ratings "
                               "or reviews)",)  # fmt: skip
    assert check(config) == checked  # the data is built: checked before the data step
    assert check(config.replace("dpo", stages=["rf_easy"])).dpo is False
    with pytest.raises(ConfigError, match=r"unmet needs:\n  - sft\.model=\S+no_model': expected [^\n]+$"):
        check(config.replace("sft", model=str(tmp_path / "no_model")))

    dataset = load_dataset(run / "data")
    for user in dataset.users.values():
        user.profile = ""
    needs = data_needs(config, dataset)
    assert len(needs) == 2 and needs[0].text.startswith("dpo.stages rf_easy, rf_hard: RF-DPO needs feedback levels")
    assert needs[1].text == (f"sft.tasks user_align (B2) maps user profiles to user SCIDs, and no user of "
                             f"{run / 'data'} has a profile; remove it from sft.tasks")  # fmt: skip
    skipped = resolved(config, needs, skip_unmet=True, run_dir=run)
    assert skipped.config.sft.tasks == ["seq"] and skipped.config.dpo.stages == ["sp_easy"]
    assert skipped.skipped[1] == "sft task user_align (B2): no user has a profile"
    alone = config.replace("sft", tasks=["user_align"])
    with pytest.raises(ConfigError, match=r"unmet needs:\n  - sft\.tasks user_align \(B2\)[^\n]+sft\.tasks$"):
        resolved(alone, data_needs(alone, dataset), skip_unmet=True, run_dir=run)
    assert resolved(config, [], skip_unmet=False, run_dir=run) == Checked(config)

    for item in dataset.items.values():
        item.categories = []
    unisid = data_needs(config.replace("tokenize", item_tokenizer="unisid"), dataset)[-1]
    assert unisid.text.startswith("tokenize.unisid_options.multi_granularity: UniSID's positives by category depth")
    assert unisid.skip is None


def test_data_whose_raw_files_changed_is_not_taken_as_current_before_its_step(tmp_path):
    """The state's key of the data step leaves the raw files out (the step hashes them itself): before the data step,
    the checks take the built data as current only while the raw files hash as its meta.json records."""
    run = tmp_path / "run"
    plan = Plan(load_pipeline_config(write_config(tmp_path)), run / "config.yaml", run, in_run(run))
    assert check_plan(plan, skip_unmet=True, build=True) is not None
    assert check_plan(plan, skip_unmet=True) is not None  # current: checked before the data step
    interactions = tmp_path / "raw" / "Toys.inter.json"
    interactions.write_text(interactions.read_text().replace('"0": [', '"0": [7, '), encoding="utf-8")
    assert check_plan(plan, skip_unmet=True) is None  # only the environment: the data step builds it again first
    checked = check_plan(plan, skip_unmet=True, build=True)
    assert checked.built == ("data",) and load_dataset(run / "data").sequences["0"].items[0] == "7"
    assert check_plan(plan, skip_unmet=True) is not None


def test_a_launcher_that_cannot_run_stops_the_pipeline_before_any_work(tmp_path, capsys):
    """A mistyped `--launcher` would fail only at the first trained stage, after the data, embeddings and tokenizer:
    its program is looked up on PATH (and its quoting checked) first."""
    config, run = write_config(tmp_path), tmp_path / "run"
    for launcher, message in (("acclerate launch --num_processes 2", "no program 'acclerate' on PATH"),
                              ("accelerate launch --config 'a b", "No closing quotation")):  # fmt: skip
        argv = ["pipeline", "--config", str(config), "--run-dir", str(run), "--launcher", launcher]
        assert main(argv) == 2
        assert f"--launcher {launcher!r}: " in (error := capsys.readouterr().err) and message in error
        assert not run.exists()


def test_too_little_free_disk_stops_the_run_before_any_folder_is_made(tmp_path, monkeypatch):
    """The disk of the run folder (here its nearest existing parent) has half a GiB free where the run needs 1 GiB
    (the tiny model: no base weights to copy): the run stops naming both, before the run folder, its lock or its data
    exist. With exactly 1 GiB free the disk is no need, and the run goes on to build its data."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    asked = []

    def disk_usage(path):
        asked.append(Path(path))
        return usage(4 << 30, (4 << 30) - free, free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    run, config = tmp_path / "run" / "inner", write_config(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    free = 1 << 29
    message = rf"disk: 0\.5 GiB free at {re.escape(str(tmp_path))}; the run needs at least 1\.0 GiB"
    with pytest.raises(ConfigError, match=message):
        run_pipeline(config, run)
    assert asked == [tmp_path] and sorted(p.name for p in tmp_path.iterdir()) == before
    free = 1 << 30
    with pytest.raises(ConfigError, match=r"dpo\.stages rf_easy, rf_hard: RF-DPO") as error:
        run_pipeline(config, run)
    assert "disk:" not in str(error.value) and (run / "data").is_dir()
