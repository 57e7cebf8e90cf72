"""The baselines on a crafted dataset (metrics computed by hand) and on MovieLens-100K users (the collaborative
encoder saved by the embed stage ranks as it did in training)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from align3gr.baselines.stage import POPULAR, SEQUENTIAL, run_baseline
from align3gr.cli import main
from align3gr.data.dataset import Dataset, load_dataset, write_dataset
from align3gr.data.schema import Item, Sequence, User
from align3gr.embed.collaborative import SequenceEncoder, load_encoder, save_encoder
from align3gr.errors import ConfigError, DataError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.io import read_json, write_json
from align3gr.seeding import seeded

ITEMS = [f"i{k}" for k in range(6)]
SEQUENCES = {
    "u1": ["i0", "i1", "i2", "i3", "i4"],
    "u2": ["i1", "i2", "i0", "i5", "i3"],
    "u3": ["i2", "i1", "i4", "i0", "i5"],
    "u4": ["i3", "i2", "i5", "i1", "i0"],
}
"""Training parts (`items[:-2]`) count i2: 4, i1: 3, i0: 2, i3, i4, i5: 1, so the popular list is i2 i1 i0 i3 i4 i5
(ties in catalogue order)."""


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> Path:
    """A canonical data folder of 4 users and 6 items."""
    folder = tmp_path_factory.mktemp("crafted") / "data"
    folder.mkdir()
    dataset = Dataset(
        items={i: Item(i, f"Item {i}") for i in ITEMS},
        users={u: User(u) for u in SEQUENCES},
        sequences={u: Sequence(u, items, list(range(len(items)))) for u, items in SEQUENCES.items()},
        meta={"max_history": 20},
    )
    write_dataset(dataset, folder)
    return folder


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


def ndcg(rank: int) -> float:
    return 1 / math.log2(rank + 1)


def test_popular_baseline_equals_the_hand_computation(crafted, tmp_path):
    # test split, history excluded: u1 ranks i4 i5 (target i4: 1st), u2 i3 i4 (i3: 1st), u3 i3 i5 (i5: 2nd),
    # u4 i0 i4 (i0: 1st)
    test = run_baseline(POPULAR, crafted, tmp_path / "test", EvaluateConfig(ks=[1, 2]))
    assert [r["ranked"] for r in rows(tmp_path / "test")] == [["i4", "i5"], ["i3", "i4"], ["i3", "i5"], ["i0", "i4"]]
    assert rows(tmp_path / "test")[0]["scores"] == [1.0, 1.0]
    assert test["recall@1"] == test["ndcg@1"] == 3 / 4
    assert test["recall@2"] == 1.0 and test["ndcg@2"] == pytest.approx((3 + ndcg(2)) / 4)
    assert test["exclude_history"] is True and test["beam_size"] == 20 and test["split"] == "test"
    assert test["coverage@1"] == 3 / 6 and test["valid_rate"] == 1.0 and test["num_users"] == 4
    # without exclusion everyone gets i2 i1 i0 i3 i4 i5: targets i4, i3, i5, i0 at ranks 5, 4, 6, 3
    full = run_baseline(POPULAR, crafted, tmp_path / "full", EvaluateConfig(ks=[3, 5], exclude_history=False))
    assert full["recall@3"] == 1 / 4 and full["ndcg@3"] == pytest.approx(ndcg(3) / 4)
    assert full["recall@5"] == 3 / 4 and full["ndcg@5"] == pytest.approx((ndcg(5) + ndcg(4) + ndcg(3)) / 4)
    # valid split (history items[:-2]), lists cut to 2: u1 i3 i4 (i3: 1st), u2 i3 i4 (i5: absent), u3 i0 i3 (i0:
    # 1st), u4 i1 i0 (i1: 1st)
    valid = run_baseline(POPULAR, crafted, tmp_path / "valid", EvaluateConfig(split="valid", ks=[1, 2], beam_size=2))
    assert [r["ranked"] for r in rows(tmp_path / "valid")] == [["i3", "i4"], ["i3", "i4"], ["i0", "i3"], ["i1", "i0"]]
    assert valid["recall@1"] == valid["recall@2"] == valid["ndcg@2"] == 3 / 4


def test_sequential_baseline_ranks_with_the_saved_encoder(crafted, tmp_path):
    """The `sasrec` baseline reloads the encoder the embed stage saved and ranks by its scores after the user's
    history; the metrics equal those computed from the encoder's scores of each history alone (no padding)."""
    embeddings = tmp_path / "embeddings"
    embeddings.mkdir()
    with seeded(5):
        encoder = SequenceEncoder(len(ITEMS), dim=8, max_len=3, layers=1, heads=2, dropout=0.1).eval()
    save_encoder(encoder, embeddings)
    write_json(embeddings / "ids.json", {"items": ITEMS, "users": list(SEQUENCES)})
    write_json(embeddings / "report.json", {})
    metrics = run_baseline(SEQUENTIAL, crafted, tmp_path / "out", EvaluateConfig(ks=[1, 2]), embeddings)
    reloaded = load_encoder(embeddings)
    assert not reloaded.training and reloaded.hyperparameters == encoder.hyperparameters
    expected_recall = expected_ndcg = 0.0
    for row, (user, items) in zip(rows(tmp_path / "out"), SEQUENCES.items(), strict=True):
        history = torch.tensor([[ITEMS.index(i) + 1 for i in items[:-1][-3:]]])  # the last max_len items
        scores = encoder.score_items(history)[0]
        candidates = sorted((i for i in ITEMS if i not in items[:-1]), key=lambda i: -scores[ITEMS.index(i)])
        assert row["user_id"] == user and row["ranked"] == candidates
        assert row["scores"] == pytest.approx([scores[ITEMS.index(i)].item() for i in candidates], abs=1e-5)
        rank = candidates.index(items[-1]) + 1
        expected_recall += (rank <= 1) / 4
        expected_ndcg += ndcg(rank) * (rank <= 2) / 4
    assert metrics["recall@1"] == pytest.approx(expected_recall) and metrics["ndcg@2"] == pytest.approx(expected_ndcg)
    assert metrics["baseline"] == SEQUENTIAL and metrics["model"] == str(embeddings)


def test_sequential_baseline_reproduces_the_embed_report(ml100k_small, ml100k_small_embeddings, tmp_path):
    """On the valid split, under the evaluation protocol (history excluded), the baseline's Recall@10 is the one the
    embed stage reported for the epoch it kept: the saved encoder is that epoch's, chosen by the same measure."""
    config = EvaluateConfig(split="valid", ks=[10], batch_size=64)
    metrics = run_baseline(SEQUENTIAL, ml100k_small, tmp_path / "valid", config, ml100k_small_embeddings)
    report = read_json(ml100k_small_embeddings / "report.json")
    assert metrics["recall@10"] == pytest.approx(report["collaborative_valid_recall@10"])
    assert metrics["num_users"] == len(load_dataset(ml100k_small).sequences)


def test_baselines_command_and_errors(crafted, ml100k_small, ml100k_small_embeddings, tmp_path, capsys):
    out = tmp_path / "baselines"
    assert main(["baselines", "--data", str(crafted), "--out", str(out), "--ks", "1,2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [POPULAR]
    assert "popular" in capsys.readouterr().out
    assert read_json(out / POPULAR / "metrics.json")["recall@1"] == 3 / 4
    argv = ["baselines", "--data", str(ml100k_small), "--embeddings", str(ml100k_small_embeddings), "--out", str(out)]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [POPULAR, SEQUENTIAL]
    with pytest.raises(DataError, match="another dataset"):
        run_baseline(SEQUENTIAL, crafted, tmp_path / "x", EvaluateConfig(), ml100k_small_embeddings)
    with pytest.raises(DataError, match="run `align3gr embed` again"):
        run_baseline(SEQUENTIAL, crafted, tmp_path / "x", EvaluateConfig(), tmp_path)
    with pytest.raises(ConfigError, match="baseline must be one of"):
        run_baseline("random", crafted, tmp_path / "x")
    fresh = tmp_path / "fresh"
    argv = ["baselines", "--data", str(crafted), "--embeddings", str(tmp_path / "embedings"), "--out", str(fresh)]
    assert main(argv) == 2  # a mistyped folder: said so, before the popular list is written
    assert "embedings: folder not found: expected the embed stage's output" in capsys.readouterr().err
    assert not fresh.exists()
    argv = ["baselines", "--data", str(crafted), "--embeddings", str(ml100k_small_embeddings), "--out", str(fresh)]
    assert main(argv) == 2  # another dataset's embeddings: said so, before the popular list is written
    assert "embeddings were computed for another dataset" in capsys.readouterr().err and not fresh.exists()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"notes: the output folder holds files but no metrics\.json"):
        run_baseline(POPULAR, crafted, foreign)
    assert [p.name for p in foreign.iterdir()] == ["todo.txt"]


def test_sequential_baseline_refuses_embeddings_of_another_build(ml100k_small, ml100k_small_embeddings, tmp_path):
    """The same items and users built otherwise (another filter or split: another fingerprint) trained the encoder
    on what this build holds out, so its test score would be leaked: refused, naming the embeddings, before any
    baseline is written."""
    other = tmp_path / "data"
    shutil.copytree(ml100k_small, other)
    meta = read_json(other / "meta.json")
    meta["fingerprint"] = "0" * 64
    write_json(other / "meta.json", meta)
    out = tmp_path / "baselines"
    argv = ["baselines", "--data", str(other), "--embeddings", str(ml100k_small_embeddings), "--out", str(out)]
    with pytest.raises(
        DataError, match=r"another build of the data \(its fingerprint [0-9a-f]{12}\.\.\., this data's 000000000000"
    ):
        run_baseline(SEQUENTIAL, other, tmp_path / "x", EvaluateConfig(), ml100k_small_embeddings)
    assert main(argv) == 2 and not out.exists()
