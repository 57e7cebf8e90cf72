"""UniSID as the item tokenizer of the `tokenize` stage on a slice of MovieLens-100K (text and genres, no images):
user codes from the dual tokenizer, both tokenizers' V-measures reported, the code tables accepted by the SFT
stage, and a real 2-process `accelerate launch` of recipes/train_unisid.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from launching import accelerate_launch
from test_sft_stage import SMALL as SFT_SMALL
from test_tokenize import SMALL

from align3gr.data.dataset import load_dataset
from align3gr.errors import DataError
from align3gr.scid.code_tables import load_code_tables
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.stage import run_sft
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.stage import run_tokenize

ROOT = Path(__file__).resolve().parent.parent
UNISID = {"epochs": 1, "batch_size": 64, "tiny_vocab_size": 1000, "tiny_hidden_size": 32}


@pytest.fixture(scope="module")
def scid(ml100k_small, ml100k_small_embeddings, tmp_path_factory):
    """(scid folder, report) of UniSID item codes and dual user codes on the MovieLens slice."""
    out = tmp_path_factory.mktemp("unisid_stage") / "scid"
    config = TokenizeConfig(**SMALL, item_tokenizer="unisid", unisid_options=UNISID)
    return out, run_tokenize(ml100k_small, ml100k_small_embeddings, out, config)


def test_embeddings_of_another_build_are_refused_before_unisid_trains(ml100k_small, ml100k_small_embeddings, tmp_path):
    """UniSID trains before the dual tokenizer reads the embeddings (hours on a real backbone): they are checked
    first, so nothing of UniSID's is trained or saved."""
    embeddings = tmp_path / "embeddings"
    shutil.copytree(ml100k_small_embeddings, embeddings)
    report = json.loads((embeddings / "report.json").read_text())
    (embeddings / "report.json").write_text(json.dumps(report | {"data_fingerprint": "0" * 64}))
    config = TokenizeConfig(**SMALL, item_tokenizer="unisid", unisid_options=UNISID)
    with pytest.raises(DataError, match=r"embeddings were computed for another build of the data"):
        run_tokenize(ml100k_small, embeddings, tmp_path / "scid", config)
    assert not list(tmp_path.glob("scid*/**/unisid*"))


def test_unisid_items_and_dual_users(ml100k_small, scid):
    out, report = scid
    dataset = load_dataset(ml100k_small)
    items, users = load_code_tables(out, dataset)
    assert len({tuple(c) for c in items.values()}) == len(items) == len(dataset.items)
    assert len(users) == 150 and all(c[0].startswith("<ua_") for c in users.values())
    assert report["item_tokenizer"] == "unisid" and report["items"]["collisions"]["collision_rate_after"] == 0.0
    for side in ("items", "dual_items"):
        raw, unique = report[side]["v_measure"], report[side]["resolved"]["v_measure"]
        assert len(raw) == 3 and all(0.0 <= level["v_measure"] <= 1.0 for level in raw)
        assert raw[0]["homogeneity"] <= raw[-1]["homogeneity"] <= unique[-1]["homogeneity"] == pytest.approx(1.0)
    assert report["u2i_auc"]["phase1"] and len(report["users"]["levels"]) == 3
    assert (out / "tokenizer.safetensors").is_file() and (out / "unisid" / "unisid.json").is_file()
    assert dataset.items["1"].title not in report["unisid"]["summary_example"]  # Eq. 7: the attributes only


def test_the_sft_stage_accepts_the_unisid_code_tables(ml100k_small, scid, tmp_path):
    out, _ = scid
    result = run_sft(ml100k_small, out, tmp_path / "sft", SFTStageConfig(**SFT_SMALL))
    assert result.meta["steps"] == 3
    assert (tmp_path / "sft" / "item_codes.json").read_bytes() == (out / "item_codes.json").read_bytes()


@pytest.mark.slow
def test_accelerate_launch_on_two_cpu_processes(ml100k_small, ml100k_small_embeddings, tmp_path):
    config = tmp_path / "unisid.yaml"
    config.write_text(yaml.safe_dump({"tokenize": {**SMALL, "unisid_options": UNISID}}))
    out = tmp_path / "scid"
    command = accelerate_launch(
        "--multi_gpu", "recipes/train_unisid.py", "--config", str(config),
        "--data", str(ml100k_small), "--embeddings", str(ml100k_small_embeddings), "--out", str(out),
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("SCID tokenizer") == 1  # the summary comes from the main process only
    report = json.loads((out / "report.json").read_text())
    assert report["unisid"]["processes"] == 2 and report["items"]["collisions"]["collision_rate_after"] == 0.0
    items, users = load_code_tables(out, load_dataset(ml100k_small))
    assert len(users) == 150 and len({tuple(c) for c in items.values()}) == len(items)
