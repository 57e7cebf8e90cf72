"""The dual SCID tokenizer: RQ-VAE, the U2I loss, collision resolution, statistics and the stage's artifacts."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from align3gr.data.dataset import load_dataset
from align3gr.embed.stage import Embeddings
from align3gr.errors import ConfigError, DataError
from align3gr.scid.code_tables import declared_sizes, load_code_tables, write_code_tables
from align3gr.scid.tokens import code_tokens
from align3gr.tokenize.codebook_stats import level_statistics, sid_entropy
from align3gr.tokenize.collisions import collision_rate, resolve_collisions
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.dual import DualTokenizer, DualTrainer
from align3gr.tokenize.kmeans import kmeans
from align3gr.tokenize.losses.u2i import InteractionSet, false_negative_mask, u2i_auc, u2i_loss
from align3gr.tokenize.rqvae import RQVAE
from align3gr.tokenize.stage import item_report, run_tokenize


def hierarchical_gaussians(n: int = 4096, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """A mixture of 4 x 4 x 4 Gaussians: coarse centres, finer offsets, finest offsets."""
    generator = torch.Generator().manual_seed(seed)
    levels = [torch.randn(4, dim, generator=generator) * scale for scale in (4.0, 1.0, 0.25)]
    picks = torch.randint(4, (n, 3), generator=generator)
    centres = sum(levels[level][picks[:, level]] for level in range(3))
    return centres + 0.02 * torch.randn(n, dim, generator=generator)


def train_reconstruction(model: RQVAE, data: torch.Tensor, steps: int = 800) -> float:
    generator = torch.Generator().manual_seed(0)
    model.quantizer.init_codebooks(model.encoder(data).detach(), generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = data[torch.randint(len(data), (256,), generator=generator)]
        optimizer.zero_grad()
        model(batch).loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((model(data).reconstruction - data).pow(2).sum(1).mean())


def test_rqvae_beats_a_single_codebook_of_the_same_size():
    data = hierarchical_gaussians()
    torch.manual_seed(0)
    residual = train_reconstruction(RQVAE(16, [64], levels=3, codebook_size=4, code_dim=16), data)
    torch.manual_seed(0)
    single = train_reconstruction(RQVAE(16, [64], levels=1, codebook_size=12, code_dim=16), data)
    assert residual < 0.5 * single  # 3 levels x 4 codes address 64 clusters; 12 flat codes only 12


def test_the_reconstruction_of_a_separate_sc_embedding_does_not_reshape_it():
    """With `sc_dim`, the RQ-VAE reconstructs the SC encoder's output as a fixed target: with the RQ-VAE's encoder
    zeroed, the only path left from the reconstruction loss to the SC encoder would be the target itself."""
    torch.manual_seed(0)
    model = RQVAE(8, [16], levels=2, codebook_size=4, code_dim=4, sc_dim=6)
    with torch.no_grad():
        for parameter in model.encoder.parameters():
            parameter.zero_()
    model(torch.randn(32, 8)).reconstruction_loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.sc_encoder.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.decoder.parameters())


def test_kmeans_is_deterministic_and_finds_separated_clusters():
    data = torch.cat(
        [torch.randn(50, 2) * 0.1 + centre for centre in (torch.tensor([5.0, 0]), torch.tensor([-5.0, 0]))]
    )
    first = kmeans(data, 2, generator=torch.Generator().manual_seed(1))
    again = kmeans(data, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert sorted(round(float(c)) for c in first[:, 0]) == [-5, 5]
    with pytest.raises(ValueError, match="at least k=3"):
        kmeans(data[:2], 3)


def test_u2i_loss_equals_a_hand_computation_and_ignores_false_negatives():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]])
    logits = [[1.0, 0.0, 1.0], [0.0, 2.0, -1.0], [1.0, 2.0, 0.0]]
    rows = [-math.log(math.exp(r[b]) / sum(math.exp(x) for x in r)) for b, r in enumerate(logits)]
    assert u2i_loss(u, v).item() == pytest.approx(sum(rows) / 3, abs=1e-6)
    known = InteractionSet(torch.tensor([0, 0, 1, 2]), torch.tensor([10, 11, 11, 12]), num_items=20)
    exclude = false_negative_mask(torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12]), known)
    assert exclude.tolist() == [[False, True, False], [False, False, False], [False, False, False]]
    row0 = -math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(1.0)))  # item 1 is user 0's own: not a negative
    assert u2i_loss(u, v, exclude).item() == pytest.approx((row0 + rows[1] + rows[2]) / 3, abs=1e-6)
    sparse = InteractionSet(torch.tensor([0, 0, 1, 2]), torch.tensor([10, 11, 11, 12]), num_items=20, dense_limit=0)
    assert torch.equal(false_negative_mask(torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12]), sparse), exclude)


def test_u2i_auc():
    user = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[2.0, 0.0]])
    negatives = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [2.0, 5.0]]])
    assert u2i_auc(user, positive, negatives) == pytest.approx((1 + 0 + 0.5) / 3)
    assert u2i_auc(user, positive, negatives, keep=torch.tensor([[True, False, False]])) == 1.0


def test_collision_resolution_reassigns_the_last_level():
    codes = np.array([[1, 2, 3]] * 5 + [[1, 2, 4], [0, 0, 0]])
    distances = np.random.default_rng(0).random((7, 8))
    resolved, report = resolve_collisions(codes, distances)
    assert resolved.shape == (7, 3) and collision_rate(resolved) == 0.0
    assert (resolved[:, :2] == codes[:, :2]).all()
    assert report["collision_rate_before"] == pytest.approx(5 / 7)
    assert report["collision_rate_after"] == 0.0 and not report["disambiguation_level_added"]
    assert report["items_reassigned"] >= 4


def test_collision_resolution_adds_a_level_only_when_a_prefix_is_over_capacity():
    codes = np.array([[1, 1]] * 6 + [[2, 0], [2, 0]])
    resolved, report = resolve_collisions(codes, np.zeros((8, 4)))
    assert report["disambiguation_level_added"] and report["groups_over_capacity"] == 1
    assert resolved.shape == (8, 3) and collision_rate(resolved) == 0.0
    assert sorted(resolved[:6, 2].tolist()) == list(range(6))
    assert len({tuple(r) for r in resolved[6:, :2]}) == 2  # the small group was re-assigned, not extended
    with pytest.raises(ConfigError, match=r"1 code prefixes hold more items than the last level's 4 codes \(up to 6\)"):
        resolve_collisions(codes, np.zeros((8, 4)), disambiguation_level=False)


def test_item_report_measures_the_raw_codes_and_the_unique_ones_apart():
    raw = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0]])
    costs = np.array([[0.0, 1.0], [0.5, 0.1], [0.0, 1.0], [0.0, 1.0]])  # item 1 moves to last code 1
    codes, report = item_report(raw, costs, 2, ["x", "y", "x", "y"])
    assert codes.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert report["sid_entropy"] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert report["resolved"]["sid_entropy"] == pytest.approx(math.log(4))  # unique codes: always ln N
    # full raw codes group {0, 1} (x, y), {2} (x), {3} (y): H(C|K) = 0.5 ln 2 of H(C) = ln 2
    assert report["v_measure"][2]["homogeneity"] == pytest.approx(0.5)
    assert report["resolved"]["v_measure"][2]["homogeneity"] == pytest.approx(1.0)
    assert report["levels"][2]["utilisation"] == 0.5 and report["resolved"]["levels"][2]["utilisation"] == 1.0
    assert report["collisions"]["collision_rate_before"] == 0.5 and report["collisions"]["items_reassigned"] == 1


def test_codebook_statistics():
    codes = np.array([[0, 1], [0, 2], [0, 3], [1, 3]])
    level0, level1 = level_statistics(codes, [4, 4])
    assert level0["utilisation"] == 0.5 and level0["top1_load"] == 0.75
    assert level0["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert level1["utilisation"] == 0.75
    assert sid_entropy(np.array([[0], [0], [1], [1]])) == pytest.approx(math.log(2))


SMALL = dict(codebook_size=16, user_codebook_size=16, phase1_max_epochs=3, phase2_epochs=3, batch_size=512)


def test_tokenize_stage_writes_unique_reproducible_codes(ml100k_small, ml100k_small_embeddings, tmp_path):
    report = run_tokenize(ml100k_small, ml100k_small_embeddings, tmp_path / "scid", TokenizeConfig(**SMALL))
    items = json.loads((tmp_path / "scid" / "item_codes.json").read_text())
    users = json.loads((tmp_path / "scid" / "user_codes.json").read_text())
    assert len({tuple(c) for c in items.values()}) == len(items)
    assert all(c[0].startswith("<a_") and c[1].startswith("<b_") and c[2].startswith("<c_") for c in items.values())
    assert all(c[0].startswith("<ua_") for c in users.values()) and len(users) == 150
    assert report["items"]["collisions"]["collision_rate_after"] == 0.0
    assert len(report["items"]["levels"]) >= 3 and all("utilisation" in level for level in report["items"]["levels"])
    assert [level["level"] for level in report["items"]["v_measure"]] == list(range(len(report["items"]["levels"])))
    raw, unique = report["items"], report["items"]["resolved"]
    assert len(raw["levels"]) == 3 and len(unique["levels"]) == len(next(iter(items.values())))
    assert raw["sid_entropy"] < unique["sid_entropy"] == pytest.approx(math.log(len(items)))  # raw codes collide
    assert report["u2i_auc"]["phase1"] and len(report["u2i_auc"]["phase2"]) == 3
    assert (tmp_path / "scid" / "code_usage.png").stat().st_size > 1000
    reloaded = DualTokenizer.load(tmp_path / "scid")
    assert reloaded.items.quantizer.codebook_size == 16
    run_tokenize(ml100k_small, ml100k_small_embeddings, tmp_path / "again", TokenizeConfig(**SMALL))
    for name in ("item_codes.json", "user_codes.json", "tokenizer.safetensors"):
        assert (tmp_path / "scid" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_item_only_ablation_and_bad_settings(ml100k_small, ml100k_small_embeddings, tmp_path):
    config = TokenizeConfig(**SMALL, dual=False, u2i=False, use_cf=False)
    report = run_tokenize(ml100k_small, ml100k_small_embeddings, tmp_path / "scid", config)
    assert json.loads((tmp_path / "scid" / "user_codes.json").read_text()) == {}
    printed = report.render()  # no user or U2I lines when neither was trained
    assert "item collision rate before" in printed and "user collision" not in printed and "U2I" not in printed
    with pytest.raises(ConfigError, match="u2i=True needs dual=True"):
        TokenizeConfig(dual=False).validate()
    with pytest.raises(ConfigError, match="codebook_size=5000 exceeds the"):
        run_tokenize(ml100k_small, ml100k_small_embeddings, tmp_path / "x", TokenizeConfig(codebook_size=5000))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("switch", ["hamr", "adasid", "das", "quasid_cl", "das_cf"])
def test_regularisers_train_inside_the_tokenizer(ml100k_small, ml100k_small_embeddings, tmp_path, switch):
    config = TokenizeConfig(**{**SMALL, "phase1_max_epochs": 1, "phase2_epochs": 2}, **{switch: True})
    report = run_tokenize(ml100k_small, ml100k_small_embeddings, tmp_path / "scid", config)
    last = report["history"]["phase2"][-1]
    assert any(name.startswith(switch) for name in last), last
    assert all(math.isfinite(value) for value in last.values())
    assert report["items"]["collisions"]["collision_rate_after"] == 0.0


def test_embeddings_of_another_dataset_are_named(ml100k_small, ml100k_small_embeddings):
    dataset = load_dataset(ml100k_small)
    embeddings = Embeddings.load(ml100k_small_embeddings)
    first, second = list(dataset.sequences)[:2]
    embeddings.user_ids = [second, first, *embeddings.user_ids[2:]]
    with pytest.raises(
        DataError, match=rf"embeddings.*another dataset \(user '{second}' where the dataset has '{first}'\)"
    ):
        DualTrainer(dataset, embeddings, TokenizeConfig(**SMALL))


def test_embeddings_of_another_build_of_the_same_ids_are_named(ml100k_small, ml100k_small_embeddings):
    """Same users and items, other sequences: the collaborative features saw other splits."""
    dataset = load_dataset(ml100k_small)
    embeddings = Embeddings.load(ml100k_small_embeddings)
    assert embeddings.report["data_fingerprint"] == dataset.meta["fingerprint"]
    embeddings.report["data_fingerprint"] = "0" * 64
    with pytest.raises(DataError, match=r"embeddings were computed for another build of the data \(its fingerprint "
                                        r"000000000000\.\.\."):  # fmt: skip
        DualTrainer(dataset, embeddings, TokenizeConfig(**SMALL))


def test_a_diverging_tokenizer_stops_naming_its_learning_rate(ml100k_small, ml100k_small_embeddings, tmp_path):
    config = TokenizeConfig(**{**SMALL, "phase1_max_epochs": 2, "phase2_epochs": 2, "lr": 1e12})
    with pytest.raises(ConfigError, match=r"training diverged: its \w+ loss is (nan|inf).*lower tokenize\.lr \(now "):
        run_tokenize(ml100k_small, ml100k_small_embeddings, tmp_path / "scid", config)
    assert not (tmp_path / "scid").exists()


def test_more_code_levels_than_token_letters_are_refused():
    TokenizeConfig(levels=25).validate()
    with pytest.raises(ConfigError, match="levels=26: at most 25"):
        TokenizeConfig(levels=26).validate()


def test_regulariser_options_are_checked():
    with pytest.raises(ConfigError, match="HaMRConfig has no option 'margin'"):
        TokenizeConfig(hamr=True, hamr_options={"margin": 1}).validate()
    with pytest.raises(ConfigError, match="das=True .* needs dual and use_cf"):
        TokenizeConfig(das=True, use_cf=False).validate()


def test_code_tables_are_checked_against_the_dataset_and_reload_encodes_new_rows(
    ml100k_small, ml100k_small_embeddings, tmp_path
):
    run_tokenize(ml100k_small, ml100k_small_embeddings, tmp_path / "scid", TokenizeConfig(**SMALL))
    dataset = load_dataset(ml100k_small)
    items, users = load_code_tables(tmp_path / "scid", dataset)
    assert set(items) == set(dataset.items) and set(users) == set(dataset.sequences)
    embeddings = Embeddings.load(ml100k_small_embeddings)
    tokenizer = DualTokenizer.load(tmp_path / "scid")
    codes = tokenizer.encode("user", embeddings.user_semantic, embeddings.user_cf)
    assert [[f"<u{'abc'[level]}_{c}>" for level, c in enumerate(row)] for row in codes] == list(users.values())
    with pytest.raises(DataError, match="features have 400 dimensions; this tokenizer expects 448"):
        tokenizer.encode("item", embeddings.item_semantic[:, :336], embeddings.item_cf)
    original = json.loads((tmp_path / "scid" / "item_codes.json").read_text())
    first, second = list(original)[:2]
    cases = [
        ({k: v for k, v in original.items() if k != first}, rf"item_codes\.json: no code for '{first}' \(1 of"),
        ({**original, "not-an-item": ["<a_1>", "<b_1>", "<c_1>"]}, "'not-an-item' is not in the dataset"),
        ({**original, first: original[first][:-1]}, r"has \d+ codes; the others have \d+"),
        (
            {**original, first: original[list(original)[1]]},
            rf"items '{first}' and '{list(original)[1]}' share the code",
        ),
    ]
    for table, pattern in cases:
        (tmp_path / "scid" / "item_codes.json").write_text(json.dumps(table))
        with pytest.raises(DataError, match=pattern):
            load_code_tables(tmp_path / "scid", dataset)


CODES = {
    "item": {"i1": ["<a_1>", "<b_7>", "<c_0>"], "i2": ["<a_1>", "<b_7>", "<c_1>"]},
    "user": {"u1": ["<ua_0>", "<ub_5>", "<uc_7>"], "u2": ["<ua_0>", "<ub_5>", "<uc_7>"]},
}


def write_scid(folder, items: dict, users: dict, report: str | None = "report.json"):
    """`folder` with the code tables and, under the name `report`, the report of a tokenizer of 3 levels of 8 codes."""
    folder.mkdir(exist_ok=True)
    write_code_tables(folder, items, users)
    if report:
        config = {"levels": 3, "codebook_size": 8, "user_codebook_size": 8}
        (folder / report).write_text(json.dumps({"items": {}, "config": config}))
    return folder


@pytest.mark.parametrize(
    ("side", "codes", "level"),
    [
        ("item", ["<ua_1>", "<ub_7>", "<uc_1>"], 0),  # user tokens in the item table
        ("user", ["<a_0>", "<b_5>", "<c_7>"], 0),  # item tokens in the user table
        ("item", ["<b_7>", "<a_1>", "<c_1>"], 0),  # levels swapped
        ("item", ["<a_1>", "<b_7>", "<d_1>"], 2),  # the letter of another level
        ("item", ["<a_1>", "<b_7>", "<c_8>"], 2),  # beyond the codebook size the report declares
        ("user", ["<ua_0>", "<ub_8>", "<uc_7>"], 1),
        ("item", ["<a_1>", "<b_7>", "<c_01>"], 2),  # another vocabulary token than <c_1>
        ("item", ["<a_1>", "<b_7>", 1], 2),
        ("item", ["<a_1>", "<b_7>", ["<c_1>"]], 2),
    ],
)
def test_code_tables_with_a_token_of_another_side_level_or_size_are_refused(tmp_path, side, codes, level):
    tables = {name: dict(table) for name, table in CODES.items()}
    key = list(tables[side])[1]
    tables[side][key] = codes
    write_scid(tmp_path, tables["item"], tables["user"])
    letter = ("" if side == "item" else "u") + "abc"[level]
    expected = f"{side}_codes.json: {side} '{key}' level {level}: expected a token `<{letter}_N>`, N a code below 8 "
    with pytest.raises(DataError, match=re.escape(expected) + r".*, got " + re.escape(repr(codes[level]))):
        load_code_tables(tmp_path)


def test_code_tables_of_the_right_tokens_read_and_the_size_bound_comes_from_the_tokenizer_report(tmp_path):
    items = dict(zip(["i1", "i2"], code_tokens(np.array([[0, 7, 3, 0], [0, 7, 3, 12]]), "item"), strict=True))
    users = dict(zip(["u1", "u2"], code_tokens(np.array([[7, 0, 1], [7, 0, 1]]), "user"), strict=True))
    folder = write_scid(tmp_path / "scid", items, users)  # the disambiguation level (4th) has no codebook size
    assert load_code_tables(folder) == (items, users)
    items = {**CODES["item"], "i2": ["<a_1>", "<b_7>", "<c_8>"]}
    assert load_code_tables(write_scid(tmp_path / "hand-made", items, CODES["user"], report=None))[0] == items
    with pytest.raises(DataError, match=r"item 'i2' level 2: .* below 8 .* got '<c_8>'"):
        load_code_tables(write_scid(tmp_path / "pushed", items, CODES["user"], report="tokenizer_report.json"))
    with pytest.raises(DataError, match="27 codes per item: the tokens have letters for 26 levels"):
        load_code_tables(write_scid(tmp_path / "long", {"i1": ["<a_1>"] * 27}, {}, report=None))


@pytest.mark.parametrize(
    ("side", "codes", "message"),
    [
        ("item", ["<a_1>", "<b_7>"], "2 codes per item; the tokenizer report declares 3 levels (items: or one more"),
        ("item", ["<a_1>", "<b_7>", "<c_1>", "<d_1>", "<e_1>"], "5 codes per item; the tokenizer report declares 3"),
        ("user", ["<ua_0>", "<ub_5>", "<uc_7>", "<ud_99999>"], "4 codes per user; the tokenizer report declares 3 "),
        ("item", ["<a_1>", "<b_7>", "<c_" + "1" * 5000 + ">"], "item 'i1' level 2: expected a token `<c_N>`, N a co"),
    ],
)
def test_code_tables_of_another_number_of_levels_or_a_huge_code_are_refused(tmp_path, side, codes, message):
    """The report's levels bound the table's (the items may add a disambiguation level); a code of thousands of
    digits is a located error, not Python's digit limit."""
    tables = {**CODES, side: {key: list(codes) for key in CODES[side]}}  # checked before item codes' uniqueness
    write_scid(tmp_path, tables["item"], tables["user"])
    with pytest.raises(DataError, match=re.escape(message)):
        load_code_tables(tmp_path)


def test_a_report_whose_levels_are_not_a_number_bounds_nothing(tmp_path):
    folder = write_scid(tmp_path, CODES["item"], CODES["user"], report=None)
    config = {"levels": True, "codebook_size": 1, "user_codebook_size": 1}  # a boolean is not a number of levels
    (folder / "report.json").write_text(json.dumps({"config": config}))
    assert declared_sizes(folder) == {}
    assert load_code_tables(folder) == (CODES["item"], CODES["user"])
