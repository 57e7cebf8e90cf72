"""The optional tokenizer regularisers and additions on crafted batches: QuaSID HaMR + CVPM, AdaSID, DAS, and the
toolkit's additions beyond the papers, inside the dual tokenizer's trainer on a 12-item catalogue."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from align3gr.data.dataset import Dataset
from align3gr.data.schema import Item, Sequence, User
from align3gr.embed.stage import Embeddings
from align3gr.errors import ConfigError
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.dual import DualTokenizer, DualTrainer, Neighbours, cycle_chunks, pooled_codes
from align3gr.tokenize.losses.adasid import (
    AdaSIDConfig,
    adasid_collision_loss,
    collision_load,
    load_coefficient,
    overlap_depth,
    progress_weights,
    relaxation_gate,
)
from align3gr.tokenize.losses.das import DASAlignment, info_nce
from align3gr.tokenize.losses.hamr import HaMRConfig, cvpm_mask, hamming, hamr_loss


def test_cvpm_masks_exactly_same_item_and_positive_pairs():
    ids = torch.tensor([1, 1, 2, 3])
    positives = torch.zeros(4, 4, dtype=torch.bool)
    positives[0, 2] = True
    mask = cvpm_mask(ids, positives)
    excluded = {(i, j) for i in range(4) for j in range(4) if not mask[i, j]}
    assert excluded == {(0, 0), (1, 1), (2, 2), (3, 3), (0, 1), (1, 0), (0, 2), (2, 0)}


def test_hamr_is_zero_beyond_the_margins_and_hand_computed_inside():
    codes = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 4], [9, 9, 9]])
    ids = torch.arange(4)
    far = torch.eye(4)  # every pair at cosine distance 1 >= m_full = 0.8 and >= m_partial
    assert hamr_loss(far, codes, cvpm_mask(ids)).item() == 0.0
    assert hamming(codes)[0].tolist() == [0, 0, 1, 3]
    close = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.3], [-1.0, 0.0]])
    e = torch.nn.functional.normalize(close, dim=-1)
    d = 1 - e @ e.T
    config = HaMRConfig()
    full = 2 * max(0.0, 0.8 - d[0, 1].item()) / 2  # pairs (0,1) and (1,0)
    partial_pairs = [(0, 2), (2, 0), (1, 2), (2, 1)]
    partial = sum(max(0.0, 0.5 - d[i, j].item()) for i, j in partial_pairs) / 4
    expected = config.lambda_full * full + config.lambda_partial * partial
    assert hamr_loss(close, codes, cvpm_mask(ids)).item() == pytest.approx(expected, rel=1e-5)
    same_item = torch.tensor([0, 0, 2, 3])  # rows 0 and 1 are the same item: no full collision left
    assert hamr_loss(close, codes, cvpm_mask(same_item)).item() == pytest.approx(
        config.lambda_partial * partial, rel=1e-5
    )


CODES = torch.tensor([[1, 2, 3], [1, 2, 4], [1, 5, 6], [7, 8, 9]])


def embeddings_with_similarities() -> torch.Tensor:
    """Unit vectors with cos(0, 1) = 0.25 and cos(0, 2) = cos(1, 2) small, item 3 opposite."""
    a = torch.tensor([1.0, 0.0, 0.0])
    b = torch.tensor([0.25, math.sqrt(1 - 0.25**2), 0.0])
    c = torch.tensor([0.1, 0.0, math.sqrt(1 - 0.01)])
    return torch.stack([a, b, c, -a])


def test_adasid_gate_and_load_on_a_crafted_batch():
    depth = overlap_depth(CODES)
    assert depth[0].tolist() == [3, 2, 1, 0]
    gate = relaxation_gate(embeddings_with_similarities(), depth, [0.18, 0.24, 0.30])
    assert gate[0, 1].item() == 1.0  # depth 2 needs sim >= 0.24: 0.25 passes
    assert gate[0, 2].item() == 0.0  # depth 1 needs sim >= 0.18: 0.1 fails
    assert gate[0, 3].item() == 0.0  # no overlap: never relaxed
    candidates = (depth > 0) & ~torch.eye(4, dtype=torch.bool)
    load = collision_load(CODES, candidates)
    assert load[0, 1].item() == 2  # signature [1, 1, 0]: pairs (0,1), (1,0)
    assert load[0, 2].item() == load[1, 2].item() == 4  # signature [1, 0, 0]: (0,2), (2,0), (1,2), (2,1)
    assert load[0, 3].item() == 0
    config = AdaSIDConfig(f_min=1.0, f_max=3.0, d_max=4.0, alpha=1.0)
    assert load_coefficient(load, config)[0, 1].item() == pytest.approx(1.0 + 2.0 * 2 / 4)
    assert load_coefficient(load, config)[0, 2].item() == pytest.approx(3.0)  # saturated at f_max


def test_adasid_progress_weights_and_loss():
    config = AdaSIDConfig(t_start=100, t_end=300, lambda_col_min=0.05, lambda_cf_max=0.25)
    assert progress_weights(0, config) == (1.0, 0.0)
    assert progress_weights(200, config) == pytest.approx((1 - 0.95 * 0.5, 0.125))
    assert progress_weights(10_000, config) == pytest.approx((0.05, 0.25))
    e = embeddings_with_similarities()
    ids = torch.arange(4)
    config = AdaSIDConfig(f_min=1.0, f_max=3.0, d_max=4.0, alpha=1.0, m_partial=0.95, reduction="sum")
    d02, d12 = 1 - 0.1, 1 - (e[1] @ e[2]).item()
    # (0,1) would cost 0.95 - 0.75 but the gate relaxes it (sim 0.25 >= eta_2); (0,2) and (2,0) are not
    # relaxed (sim 0.1 < eta_1) and carry a = 3; (1,2) is beyond the margin (d = 0.975)
    expected = 2 * 3.0 * (0.95 - d02) + 2 * 3.0 * max(0.0, 0.95 - d12)
    assert expected == pytest.approx(0.3, abs=1e-6)
    assert adasid_collision_loss(e, CODES, ids, config).item() == pytest.approx(expected, abs=1e-5)
    squeezed = torch.tensor([[1.0, 0.0], [1.0, 0.01], [1.0, 0.02], [-1.0, 0.0]])
    assert adasid_collision_loss(squeezed, CODES, ids, config).item() == 0.0  # all overlaps semantically admissible


def test_info_nce_and_das_equal_a_hand_computation():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    expected = (-math.log(math.exp(2) / (math.exp(2) + math.exp(1))) - math.log(math.exp(1) / (1 + math.exp(1)))) / 2
    assert info_nce(anchor, positive).item() == pytest.approx(expected, abs=1e-6)
    same = torch.tensor([[False, True], [True, False]])  # both rows hold the same item: no negatives left
    assert info_nce(anchor, positive, exclude=same).item() == pytest.approx(0.0, abs=1e-6)

    das = DASAlignment(2, 2, 2)
    with torch.no_grad():
        for layer in (das.user_cf, das.item_cf):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
    z_user, z_item = anchor, torch.tensor([[0.5, 0.5], [0.0, 2.0]])
    cf_user, cf_item = positive, torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    co_user, co_item = torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    views = das(z_user, z_item, cf_user, cf_item, co_user, co_item)
    expected_views = {
        "u2i_zu": info_nce(z_user, cf_item),
        "u2i_zi": info_nce(cf_user, z_item),
        "u2u_zu": info_nce(z_user, cf_user),
        "i2i_zi": info_nce(z_item, cf_item),
        "co_u2u_zu": info_nce(z_user, co_user),
        "co_i2i_zi": info_nce(z_item, co_item),
    }
    for name, value in expected_views.items():
        assert views[name].item() == pytest.approx(value.item(), abs=1e-6)
    assert views["total"].item() == pytest.approx(sum(v.item() for v in expected_views.values()), abs=1e-5)


def tiny_trainer(**options) -> DualTrainer:
    """12 items, 6 users of 6 interactions each (4 for training: 24 pairs), random features; 5 pairs per step."""
    rng = np.random.default_rng(0)
    items = {f"i{k}": Item(f"i{k}", f"Item {k}") for k in range(12)}
    sequences = {
        f"u{u}": Sequence(f"u{u}", [f"i{(2 * u + k) % 12}" for k in range(6)], list(range(6))) for u in range(6)
    }
    dataset = Dataset(items=items, users={u: User(u) for u in sequences}, sequences=sequences)
    features = [rng.normal(size=shape).astype(np.float32) for shape in ((12, 8), (6, 8), (12, 4), (6, 4))]
    embeddings = Embeddings(list(items), list(sequences), *features, report={})
    sizes = dict(codebook_size=4, user_codebook_size=4, code_dim=4, hidden_dims=[8], batch_size=5, rq_batch_size=3)
    config = TokenizeConfig(**sizes, phase1_max_epochs=1, phase2_epochs=2, auc_negatives=3, **options)
    config.validate()
    return DualTrainer(dataset, embeddings, config)


def quantising_model(trainer: DualTrainer) -> tuple[DualTokenizer, dict]:
    """A fresh tokenizer with k-means codebooks (as at the phase switch) and the RQ batch streams."""
    generator = torch.Generator().manual_seed(0)
    model = DualTokenizer(trainer.config, trainer.x_items.shape[1], trainer.x_users.shape[1], trainer.scales)
    model.items.init_codebooks(trainer.x_items, generator)
    model.users.init_codebooks(trainer.x_users, generator)
    streams = {"items": cycle_chunks(12, 3, generator), "users": cycle_chunks(6, 3, generator)}
    return model, streams


def test_adasid_progress_runs_on_the_optimiser_steps():
    trainer = tiny_trainer(dual=False, u2i=False, use_cf=False, adasid=True)
    trainer.train()
    # 2 phase-2 epochs of ceil(24 pairs / 5) steps, whatever the item batches (ceil(12 / 3) = 4) would give
    assert (trainer.adasid.t_start, trainer.adasid.t_end) == (0, 10) and trainer.step == 10


def test_adasid_adds_lambda_cf_to_the_u2i_weight_alpha():
    trainer = tiny_trainer(adasid=True)
    model, streams = quantising_model(trainer)
    trainer.adasid.t_start, trainer.adasid.t_end = 0, 100
    for step, collision, collaborative in ((0, 1.0, 0.0), (50, 1 - 0.95 * 0.5, 0.25 * 0.5)):
        trainer.step = step
        losses = trainer.batch_loss(model, trainer.pairs[:5], 0.1, 1.0, streams)
        rq = losses["rq_item"] + losses["rq_user"]
        expected = (
            (0.1 + collaborative) * losses["u2i"] + rq + collision * (losses["adasid_item"] + losses["adasid_user"])
        )
        assert losses["u2i"].item() > 0
        assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    no_u2i = tiny_trainer(adasid=True, u2i=False)  # the U-I ablation stays without U2I
    assert "u2i" not in no_u2i.batch_loss(model, no_u2i.pairs[:5], 0.0, 1.0, streams)


def test_das_aligns_the_sum_of_the_chosen_codes_and_trains_the_codebooks():
    trainer = tiny_trainer(das=True)
    model, _ = quantising_model(trainer)
    pooled = pooled_codes(model.items, trainer.x_items)
    codes = model.items.encode(trainer.x_items)
    book = model.items.quantizer.codebooks
    assert torch.allclose(pooled, book[0][codes[:, 0]] + book[1][codes[:, 1]] + book[2][codes[:, 2]])
    trainer.das_loss(model, trainer.pairs[:5])["total"].backward()
    for side in (model.items, model.users):
        assert side.quantizer.codebooks.grad.abs().sum() > 0
        assert all(p.grad is None for p in side.encoder.parameters())  # the encoder only chooses the codes
    used = {(level, int(code)) for level in range(3) for code in codes[:, level]}
    moved = {(level, code) for level, code in (book.grad.abs().sum(-1) > 0).nonzero().tolist()}
    assert moved and moved <= used


def test_co_occurrence_partners_are_never_the_anchor():
    # key 0 has values 5, 7, 9; key 1 only 5; key 2 the value 3 twice (a repeated interaction); key 3 none
    neighbours = Neighbours(torch.tensor([0, 2, 0, 1, 0, 2]), torch.tensor([9, 3, 5, 5, 7, 3]), 4)
    generator = torch.Generator().manual_seed(0)
    draws = neighbours.sample(torch.zeros(300, dtype=torch.long), torch.full((300,), 7), generator)
    assert set(draws.tolist()) == {5, 9} and 100 < (draws == 5).sum() < 200
    anchor_elsewhere = neighbours.sample(torch.zeros(50, dtype=torch.long), torch.full((50,), 6), generator)
    assert set(anchor_elsewhere.tolist()) == {5, 7, 9}
    lonely = neighbours.sample(torch.tensor([1, 2, 3]), torch.tensor([5, 3, 0]), generator)
    assert lonely.tolist() == [-1, -1, -1]


def test_das_masks_related_rows_and_leaves_rows_without_partner_out():
    z_user, co_user = (
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0]]),
    )
    z_item, co_item = (
        torch.tensor([[0.5, 0.0], [1.0, 2.0], [0.0, 1.0]]),
        torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]]),
    )
    cf_user, cf_item = (
        torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]]),
        torch.tensor([[1.0, -1.0], [0.5, 0.0], [1.0, 1.0]]),
    )
    das = DASAlignment(2, 2, 2)
    with torch.no_grad():
        for layer in (das.user_cf, das.item_cf):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
    same_user = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])  # rows 0, 1: one user
    same_item = torch.eye(3, dtype=torch.bool)
    interacted = torch.tensor([[True, True, True], [True, True, True], [False, False, True]])  # user 0 clicked item 2
    views = das(z_user, z_item, cf_user, cf_item, co_user, co_item, same_item=same_item, same_user=same_user,
                interacted=interacted, co_user_rows=torch.tensor([True, False, True]))  # fmt: skip
    # La_co_u2u_zu without row 1 (its item has no other user): row 0's only candidate (row 2) is masked, as user 0
    # clicked item 2; row 2 keeps row 0's co-user: logits <(1, 1), (0, 1)> = 1 and <(1, 1), (2, 1)> = 3 (positive)
    assert views["co_u2u_zu"].item() == pytest.approx(math.log(1 + math.exp(-2)) / 2, abs=1e-6)
    of_user, of_item = same_user | interacted, same_user | interacted.T
    expected = {
        "u2i_zu": info_nce(z_user, cf_item, exclude=of_user),
        "u2i_zi": info_nce(cf_user, z_item, exclude=of_user),
        "u2u_zu": info_nce(z_user, cf_user, exclude=same_user),
        "i2i_zi": info_nce(z_item, cf_item),
        "co_i2i_zi": info_nce(z_item, co_item, exclude=of_item),
    }
    for name, value in expected.items():
        assert views[name].item() == pytest.approx(value.item(), abs=1e-6), name
    trainer = tiny_trainer(das=True)
    model, _ = quantising_model(trainer)
    assert trainer.pairs[:2, 0].tolist() == [0, 0]
    two_rows_of_one_user = trainer.das_loss(model, trainer.pairs[:2])
    assert two_rows_of_one_user["u2u_zu"].item() == pytest.approx(0.0, abs=1e-6)  # no negative left
    assert two_rows_of_one_user["i2i_zi"].item() > 0


def test_additions_beyond_the_papers_are_options(tmp_path):
    default = tiny_trainer(hamr=True, adasid=True)
    default.train()
    assert all("revived_codes" in row for row in default.history.phase2)
    assert {"hamr_user", "adasid_user"} <= set(default.history.phase2[0])
    trainer = tiny_trainer(revive_dead_codes=False, hamr=True, adasid=True, regularize_users=False)
    trainer.train()
    assert all("revived_codes" not in row for row in trainer.history.phase2)
    assert {"hamr_item", "adasid_item"} <= set(trainer.history.phase2[0])
    assert not {"hamr_user", "adasid_user"} & set(trainer.history.phase2[0])
    separate = tiny_trainer(sc_dim=6)
    model = separate.train()
    x = separate.x_items
    assert model.items.sc_embedding(x).shape == (12, 6) and model.items.latent(x).shape == (12, 4)
    assert model.items(x).reconstruction.shape == (12, 6)  # the RQ-VAE reconstructs the SC embedding
    model.save(tmp_path)
    assert torch.equal(DualTokenizer.load(tmp_path).items.encode(x), model.items.encode(x))
    with pytest.raises(ConfigError, match="sc_dim=-1"):
        TokenizeConfig(sc_dim=-1).validate()
