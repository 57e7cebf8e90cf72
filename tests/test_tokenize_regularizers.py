"""The optional tokenizer regularisers and additions on crafted batches: QuaSID HaMR + CVPM and its contrastive
loss, AdaSID, DAS and its co-trained CF model, and the toolkit's additions beyond the papers, inside the dual
tokenizer's trainer on a 12-item catalogue."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from align3gr.data.dataset import Dataset
from align3gr.data.schema import Item, Sequence, User
from align3gr.embed.stage import Embeddings
from align3gr.errors import ConfigError
from align3gr.seeding import seeded
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.dual import DualTokenizer, DualTrainer, Neighbours, cycle_chunks, pooled_codes
from align3gr.tokenize.losses.adasid import (
    AdaSIDConfig,
    adasid_collision_loss,
    collision_load,
    level_agreement,
    load_coefficient,
    progress_weights,
    relaxation_gate,
)
from align3gr.tokenize.losses.das import DASAlignment, info_nce
from align3gr.tokenize.losses.das_cf import (
    DASCFConfig,
    DebiasedCF,
    bias_features,
    orthogonality_loss,
    similarity_loss,
)
from align3gr.tokenize.losses.hamr import HaMRConfig, cvpm_mask, hamming, hamr_loss, paired_positives
from align3gr.tokenize.losses.quasid_cl import (
    QuaSIDCLConfig,
    co_engagement_pairs,
    excluded_negatives,
    quasid_cl_loss,
)
from align3gr.tokenize.losses.u2i import InteractionSet, u2i_loss


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
    signature, depth = level_agreement(CODES)
    assert torch.equal(depth, (CODES.unsqueeze(1) == CODES.unsqueeze(0)).sum(-1))
    assert depth[0].tolist() == [3, 2, 1, 0]
    gate = relaxation_gate(embeddings_with_similarities(), depth, [0.18, 0.24, 0.30])
    assert gate[0, 1].item() == 1.0  # depth 2 needs sim >= 0.24: 0.25 passes
    assert gate[0, 2].item() == 0.0  # depth 1 needs sim >= 0.18: 0.1 fails
    assert gate[0, 3].item() == 0.0  # no overlap: never relaxed
    candidates = (depth > 0) & ~torch.eye(4, dtype=torch.bool)
    load = collision_load(signature, candidates, 3)
    assert load[0, 1].item() == 2  # signature [1, 1, 0]: pairs (0,1), (1,0)
    assert load[0, 2].item() == load[1, 2].item() == 4  # signature [1, 0, 0]: (0,2), (2,0), (1,2), (2,1)
    assert load[0, 3].item() == 0
    config = AdaSIDConfig(f_min=1.0, f_max=3.0, d_max=4.0, alpha=1.0)
    assert load_coefficient(load, config)[0, 1].item() == pytest.approx(1.0 + 2.0 * 2 / 4)
    assert load_coefficient(load, config)[0, 2].item() == pytest.approx(3.0)  # saturated at f_max


@pytest.mark.parametrize(("levels", "values"), [(4, 3), (12, 2), (25, 2)])
def test_adasid_load_equals_the_count_of_equal_signature_rows(levels, values):
    """The packed-integer count of Eq. 8-9 gives, on a random batch with repeated codes, what counting equal rows of
    the [N, N, L] agreement tensor gives, at a few levels (bincount's table) and at many (more signatures than
    pairs); the depth is the agreement's sum."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, values, (64, levels), generator=generator)
    ids = torch.randint(0, 48, (64,), generator=generator)
    agreement = (codes.unsqueeze(1) == codes.unsqueeze(0)).long()
    candidates = (agreement.sum(-1) > 0) & (ids.unsqueeze(0) != ids.unsqueeze(1))
    _, inverse, counts = torch.unique(agreement[candidates], dim=0, return_inverse=True, return_counts=True)
    expected = torch.zeros(candidates.shape)
    expected[candidates] = counts[inverse].float()
    signature, depth = level_agreement(codes)
    assert torch.equal(collision_load(signature, candidates, levels), expected)
    assert torch.equal(depth, agreement.sum(-1))
    assert len(counts) > 4  # several signatures occur, so the packing is exercised


def test_adasid_refuses_more_levels_than_an_integer_packs():
    with pytest.raises(ConfigError, match="at most 62 levels, the SIDs have 63"):
        level_agreement(torch.zeros(2, 63, dtype=torch.long))


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


def test_adasid_default_margins_repel_every_pair_its_gate_keeps():
    """Margins 1: a kept pair (sim < eta_o) costs max(0, sim). QuaSID's 0.5 / 0.8 would cost 0 here, since a kept
    pair is at a cosine distance above 1 - eta_o >= 0.70, which is why such margins are refused."""
    e = embeddings_with_similarities()  # (0, 1) relaxed at depth 2 (sim 0.25 >= 0.24); (0, 2), (1, 2) kept
    config = AdaSIDConfig(f_min=1.0, f_max=1.0, reduction="sum")  # a_ij = 1: the hinge alone
    expected = 2 * (0.1 + 0.25 * 0.1)  # ordered pairs (0, 2), (2, 0), (1, 2), (2, 1): their similarities
    assert adasid_collision_loss(e, CODES, torch.arange(4), config).item() == pytest.approx(expected, abs=1e-6)


def test_regularisers_act_in_phase_2_only_whatever_phase1_gamma():
    trainer = tiny_trainer(hamr=True, adasid=True, das=True, phase1_gamma=0.5)
    model, streams = quantising_model(trainer)
    phase1 = trainer.batch_loss(model, trainer.pairs[:5], 1.0, 0.5, streams, False)
    assert {"rq_item", "rq_user"} <= set(phase1) and not {"hamr_item", "adasid_item", "das"} & set(phase1)
    phase2 = trainer.batch_loss(model, trainer.pairs[:5], 0.1, 1.0, streams, True)
    assert {"hamr_item", "hamr_user", "adasid_item", "adasid_user", "das"} <= set(phase2)


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
    total = 0.5 * sum(v.item() for v in expected_views.values())  # beta = 0.5 (DAS 4.1.3)
    assert views["total"].item() == pytest.approx(total, abs=1e-5)


def tiny_features() -> list[np.ndarray]:
    """The tiny catalogue's random features: item and user semantic, item and user collaborative."""
    rng = np.random.default_rng(0)
    return [rng.normal(size=shape).astype(np.float32) for shape in ((12, 8), (6, 8), (12, 4), (6, 4))]


def tiny_trainer(**options) -> DualTrainer:
    """12 items, 6 users of 6 interactions each (4 for training: 24 pairs), random features; 5 pairs per step."""
    items = {f"i{k}": Item(f"i{k}", f"Item {k}") for k in range(12)}
    sequences = {
        f"u{u}": Sequence(f"u{u}", [f"i{(2 * u + k) % 12}" for k in range(6)], list(range(6))) for u in range(6)
    }
    dataset = Dataset(items=items, users={u: User(u) for u in sequences}, sequences=sequences)
    embeddings = Embeddings(list(items), list(sequences), *tiny_features(), report={})
    sizes = dict(codebook_size=4, user_codebook_size=4, code_dim=4, hidden_dims=[8], batch_size=5, rq_batch_size=3)
    config = TokenizeConfig(**sizes, phase1_max_epochs=1, phase2_epochs=2, auc_negatives=3, **options)
    config.validate()
    return DualTrainer(dataset, embeddings, config)


def quantising_model(trainer: DualTrainer) -> tuple[DualTokenizer, dict]:
    """A fresh tokenizer with k-means codebooks (as at the phase switch) and the RQ batch streams."""
    generator = torch.Generator().manual_seed(0)
    model = trainer.new_model()
    model.items.init_codebooks(trainer.features(model, "item"), generator)
    if model.users is not None:
        model.users.init_codebooks(trainer.features(model, "user"), generator)
    streams = {"items": cycle_chunks(12, 3, generator), "users": cycle_chunks(6, 3, generator)}
    return model, streams


def test_adasid_progress_runs_on_the_optimiser_steps():
    trainer = tiny_trainer(dual=False, u2i=False, use_cf=False, adasid=True)
    trainer.train()
    # 2 phase-2 epochs of ceil(24 pairs / 5) steps, whatever the item batches (ceil(12 / 3) = 4) would give
    assert (trainer.adasid.t_start, trainer.adasid.t_end) == (0, 10) and trainer.step == 10
    with_phase1_rq = tiny_trainer(dual=False, u2i=False, use_cf=False, adasid=True, phase1_gamma=0.5)
    with_phase1_rq.train()  # phase 1's steps (gamma > 0 there too) are not phase-2 progress
    assert with_phase1_rq.step == 10


def test_adasid_adds_lambda_cf_to_the_u2i_weight_alpha():
    trainer = tiny_trainer(adasid=True)
    model, streams = quantising_model(trainer)
    trainer.adasid.t_start, trainer.adasid.t_end = 0, 100
    for step, collision, collaborative in ((0, 1.0, 0.0), (50, 1 - 0.95 * 0.5, 0.25 * 0.5)):
        trainer.step = step
        losses = trainer.batch_loss(model, trainer.pairs[:5], 0.1, 1.0, streams, True)
        rq = losses["rq_item"] + losses["rq_user"]
        expected = (
            (0.1 + collaborative) * losses["u2i"] + rq + collision * (losses["adasid_item"] + losses["adasid_user"])
        )
        assert losses["u2i"].item() > 0
        assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    no_u2i = tiny_trainer(adasid=True, u2i=False)  # the U-I ablation stays without U2I
    assert "u2i" not in no_u2i.batch_loss(model, no_u2i.pairs[:5], 0.0, 1.0, streams, True)


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


def test_das_alignment_is_initialised_from_the_seed():
    first, again = tiny_trainer(das=True).das, tiny_trainer(das=True).das
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True))


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


def test_quasid_co_engagement_pairs_and_false_negative_masks():
    pairs = co_engagement_pairs([[0, 1, 2, 1], [3]], window=1)
    assert pairs.tolist() == [[0, 1], [1, 0], [1, 2], [2, 1]]  # both orders, once each; a lone item has none
    assert co_engagement_pairs([[0, 1, 2, 1]], window=2).tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    triggers, targets = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 2])
    assert excluded_negatives(triggers, targets, "none") is None
    # Eq. 7: target n is the anchor's own item (trigger m)
    assert excluded_negatives(triggers, targets, "paper").tolist() == [
        [False, True, False],
        [True, False, False],
        [True, False, False],
    ]
    known = InteractionSet(pairs[:, 0], pairs[:, 1], 4)  # and the targets co-engaged with trigger m: (1, 2), (1, 0)
    assert excluded_negatives(triggers, targets, "related", known).tolist() == [
        [False, True, False],
        [True, False, True],
        [True, True, False],
    ]


def test_quasid_cl_loss_equals_a_hand_computation():
    trigger_z = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 4.0]])  # unit rows (1, 0), (0, 1), (0.6, 0.8)
    target_z = torch.tensor([[1.0, 0.0], [0.0, -2.0], [0.0, 5.0]])  # unit rows (1, 0), (0, -1), (0, 1)
    config = QuaSIDCLConfig(lambda_cl=0.1, temperature=0.5)
    # S = e_t e_p^T / 0.5 = [[2, 0, 0], [0, -2, 2], [1.2, -1.6, 1.6]]; the paper's mask drops S_01, S_10 and S_20
    rows = [
        -math.log(math.exp(2) / (math.exp(2) + math.exp(0))),
        -math.log(math.exp(-2) / (math.exp(-2) + math.exp(2))),
        -math.log(math.exp(1.6) / (math.exp(1.6) + math.exp(-1.6))),
    ]
    exclude = excluded_negatives(torch.tensor([0, 1, 1]), torch.tensor([1, 0, 2]), "paper")
    assert quasid_cl_loss(trigger_z, target_z, exclude, config).item() == pytest.approx(0.1 * sum(rows) / 3, abs=1e-6)
    plain = [-math.log(math.exp(r[k]) / sum(math.exp(x) for x in r)) for k, r in enumerate(
        [[2, 0, 0], [0, -2, 2], [1.2, -1.6, 1.6]])]  # fmt: skip
    assert quasid_cl_loss(trigger_z, target_z, None, config).item() == pytest.approx(0.1 * sum(plain) / 3, abs=1e-6)


def test_quasid_objective_eq14_on_one_batch_of_pairs():
    options = {"batch_size": 3, "temperature": 0.5}
    trainer = tiny_trainer(dual=False, use_cf=False, u2i=False, hamr=True, quasid_cl=True, quasid_cl_options=options)
    assert len(trainer.item_pairs) == 24  # the 12 consecutive pairs of the ring of items, in both orders
    model, streams = quantising_model(trainer)
    streams["item_pairs"] = iter([torch.tensor([0, 5, 9])])
    losses = trainer.batch_loss(model, trainer.pairs[:5], 0.0, 1.0, streams, True)
    assert set(losses) == {"total", "rq_item", "hamr_item", "quasid_cl"}
    chosen = trainer.item_pairs[[0, 5, 9]]
    rows = torch.cat([chosen[:, 0], chosen[:, 1]])  # the 2B items of the pairs, triggers then targets
    out = model.items(trainer.x_items[rows])
    mask = cvpm_mask(rows, paired_positives(3))
    assert not mask[0, 3] and not mask[3, 0]  # CVPM's M^pos: a constructed pair is never repelled
    hamr = hamr_loss(out.embedding, out.quantized.codes, mask, trainer.hamr)
    exclude = excluded_negatives(chosen[:, 0], chosen[:, 1], "paper")
    cl = quasid_cl_loss(out.embedding[:3], out.embedding[3:], exclude, QuaSIDCLConfig(**options))
    for name, value in (("rq_item", out.loss), ("hamr_item", hamr), ("quasid_cl", cl)):
        assert losses[name].item() == pytest.approx(value.item(), rel=1e-6), name
    # Eq. 14: L = L_rec + L_rq + L_HaMR + L_cl
    assert losses["total"].item() == pytest.approx((out.loss + hamr + cl).item(), rel=1e-6)
    aligned = tiny_trainer(quasid_cl=True, quasid_cl_options=options)  # in phase 1 beside the U2I loss
    model, streams = quantising_model(aligned)
    streams["item_pairs"] = iter([torch.tensor([0, 5, 9])])
    phase1 = aligned.batch_loss(model, aligned.pairs[:5], 1.0, 0.0, streams, False)
    latent = model.items.latent(aligned.x_items[rows])
    expected = quasid_cl_loss(latent[:3], latent[3:], exclude, QuaSIDCLConfig(**options))
    assert phase1["quasid_cl"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert phase1["total"].item() == pytest.approx((phase1["u2i"] + expected).item(), rel=1e-6)


def item_codes(trainer: DualTrainer, model: DualTokenizer) -> torch.Tensor:
    return model.items.encode(trainer.features(model, "item"))


def test_quasid_cl_trains_end_to_end_and_changes_the_codes():
    default = tiny_trainer()
    trainer = tiny_trainer(quasid_cl=True, quasid_cl_options={"batch_size": 4})
    model = trainer.train()
    assert all("quasid_cl" in row for row in trainer.history.phase1 + trainer.history.phase2)
    assert all(math.isfinite(row["quasid_cl"]) for row in trainer.history.phase2)
    assert not torch.equal(item_codes(trainer, model), item_codes(default, default.train()))


def test_das_cf_bias_features_are_hand_computed():
    pairs = torch.tensor([[0, 0], [1, 0], [1, 1], [2, 0]])  # item 0 clicked 3 times, item 1 once, item 2 never
    users, items = bias_features(pairs, 3, 3)
    raw_items = np.array([[math.log(4), 2 / 3], [math.log(2), 1 / 3], [0.0, 0.0]])  # log(1 + n), share with fewer
    raw_users = np.array([raw_items[0], (raw_items[0] + raw_items[1]) / 2, raw_items[0]])
    for got, raw in ((items, raw_items), (users, raw_users)):
        assert np.allclose(got.numpy(), (raw - raw.mean(0)) / raw.std(0), atol=1e-6)


def test_das_cf_disentangling_losses_are_hand_computed():
    bias, real = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert similarity_loss(bias, real).item() == pytest.approx((1 - 1 / math.sqrt(2) + 0) / 2, abs=1e-6)  # Eq. 3
    assert similarity_loss(bias, real, "sum").item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)
    bias, unbiased = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    assert orthogonality_loss(bias, unbiased).item() == pytest.approx((0 + 0.5) / 2, abs=1e-6)  # Eq. 4: cos^2
    assert orthogonality_loss(bias, unbiased, "sum").item() == pytest.approx(0.5, abs=1e-6)

    torch.manual_seed(0)
    config = DASCFConfig(dim=4, hidden_dim=5, gamma=0.3)
    cf = DebiasedCF(torch.randn(3, 2), torch.randn(4, 2), config)
    users, items = torch.tensor([0, 1, 2]), torch.tensor([3, 0, 1])
    exclude = torch.tensor([[False, True, False], [False] * 3, [False] * 3])
    losses = cf.loss(users, items, exclude)
    u, i = cf.users(users), cf.items(items)
    disentangled = (
        similarity_loss(u.bias, u.real_bias)
        + similarity_loss(i.bias, i.real_bias)
        + orthogonality_loss(u.bias, u.unbiased)
        + orthogonality_loss(i.bias, i.unbiased)
    )
    assert losses["bias"].item() == pytest.approx(u2i_loss(u.biased, i.biased, exclude).item(), rel=1e-6)
    assert losses["unbias"].item() == pytest.approx(u2i_loss(u.unbiased, i.unbiased, exclude).item(), rel=1e-6)
    assert losses["disentangled"].item() == pytest.approx(disentangled.item(), rel=1e-6)
    expected = losses["bias"] + losses["unbias"] + 0.3 * disentangled  # L_CF_all
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(cf.users.representation(users), u.unbiased)  # c_u^int
    biased = DebiasedCF(torch.randn(3, 2), torch.randn(4, 2), DASCFConfig(dim=4, hidden_dim=5, debias=False))
    assert biased.users.bias is None and set(biased.loss(users, items)) == {"bias", "total"}
    assert torch.equal(biased.items.representation(items), biased.items(items).biased)  # "Biased DAS"


def test_das_cf_trains_the_cf_model_by_its_loss_and_the_alignment_only():
    trainer = tiny_trainer(das_cf=True, das=True)
    model, streams = quantising_model(trainer)
    x = trainer.features(model, "item")
    assert x.shape == (12, 8 + 32) and torch.equal(x[:, :8], trainer.x_items)  # the co-trained block replaces CF
    cf_block = torch.nn.functional.normalize(model.cf.items.representation(torch.arange(12)), dim=-1)
    assert torch.allclose(x[:, 8:], cf_block) and torch.allclose(x[:, 8:].norm(dim=1), torch.ones(12))
    batch = trainer.pairs[:5]
    losses = trainer.batch_loss(model, batch, 0.1, 1.0, streams, True)
    expected = 0.1 * losses["u2i"] + losses["rq_item"] + losses["rq_user"] + losses["das_cf"] + losses["das"]
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    ids = model.cf.users.ids.weight, model.cf.items.ids.weight
    (losses["rq_item"] + losses["rq_user"] + losses["u2i"]).backward(retain_graph=True)
    assert all(p.grad is None for p in model.cf.parameters())  # the tokenizer reads the CF block, stop-gradient
    losses["das_cf"].backward(retain_graph=True)  # L_CF_all reaches the ID embeddings of the batch's rows
    assert set(ids[0].grad.abs().sum(1).nonzero().flatten().tolist()) == set(batch[:, 0].tolist())
    assert set(ids[1].grad.abs().sum(1).nonzero().flatten().tolist()) == set(batch[:, 1].tolist())
    model.cf.zero_grad()
    losses["das"].backward()  # and so does DAS's alignment (one-stage co-training)
    assert ids[0].grad.abs().sum() > 0 and ids[1].grad.abs().sum() > 0
    das_only = tiny_trainer(das_cf=True, das=True, use_cf=False, u2i=False)  # DAS's L_All, semantic input only
    model, streams = quantising_model(das_only)
    assert das_only.features(model, "item").shape == (12, 8)
    losses = das_only.batch_loss(model, das_only.pairs[:5], 0.0, 1.0, streams, True)
    expected = losses["rq_item"] + losses["rq_user"] + losses["das_cf"] + losses["das"]  # L_Sem_all + L_CF + L_Align
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_das_cf_trains_end_to_end_changes_the_codes_and_reloads(tmp_path):
    default = tiny_trainer()
    trainer = tiny_trainer(das_cf=True)
    model = trainer.train()
    assert all("das_cf" in row for row in trainer.history.phase1 + trainer.history.phase2)
    codes = item_codes(trainer, model)
    assert not torch.equal(codes, item_codes(default, default.train()))
    with seeded(trainer.config.seed):
        initial = trainer.new_model()
    assert not torch.equal(initial.cf.users.ids.weight, model.cf.users.ids.weight)  # co-trained, not frozen
    model.save(tmp_path)
    reloaded = DualTokenizer.load(tmp_path)
    semantic = tiny_features()[0]
    assert np.array_equal(reloaded.encode("item", semantic, reloaded.collaborative("item").numpy()), codes.numpy())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"phase1_alpha": 0}, r"phase 1 trains no loss: phase1_alpha=0 and phase1_gamma=0, without das_cf or "
                              r"quasid_cl; set phase1_gamma > 0 \(RQ\) or phase1_alpha > 0 \(U2I\)"),
        ({"u2i": False, "phase2_gamma": 0}, r"phase 2 trains no loss: u2i=False and phase2_gamma=0, .*\(RQ\)$"),
        ({"phase2_alpha": 0, "phase2_gamma": 0, "hamr": True}, "phase 2 trains no loss: phase2_alpha=0"),
        ({"u2i": False, "phase2_gamma": 0, "das_cf": True, "das_cf_options": {"alpha": 0}}, "phase 2 trains no loss"),
        ({"adasid": True, "levels": 4}, r"adasid_options.eta=\[0.18, 0.24, 0.3\]: .* 4 for levels=4"),
    ],
)  # fmt: skip
def test_a_tokenizer_that_would_fail_at_a_step_is_refused_before_training(options, message):
    """A phase with no loss (the total would be the int 0, with no `backward`) or AdaSID thresholds for another
    number of levels (the first phase-2 step's error) stop the config, before the embeddings are read."""
    with pytest.raises(ConfigError, match=message):
        TokenizeConfig(**options).validate()


def test_a_loss_of_both_phases_is_enough_for_a_phase():
    trainer = tiny_trainer(u2i=False, dual=False, phase2_gamma=0, quasid_cl=True)
    trainer.train()
    assert all(row["quasid_cl"] > 0 and "rq_item" not in row for row in trainer.history.phase2)
    TokenizeConfig(phase1_alpha=0, phase1_gamma=0.5, adasid=True, levels=4,
                   adasid_options={"eta": [0.1, 0.2, 0.3, 0.4]}).validate()  # fmt: skip
    TokenizeConfig(item_tokenizer="unisid", dual=False, u2i=False, phase2_gamma=0).validate()  # no dual tokenizer


def test_quasid_and_das_cf_options_are_checked():
    TokenizeConfig(das=True, das_cf=True, use_cf=False).validate()  # DAS's own input: the semantic features
    with pytest.raises(ConfigError, match="das_cf=True .* needs use_cf or das"):
        TokenizeConfig(das_cf=True, use_cf=False).validate()
    with pytest.raises(ConfigError, match="QuaSIDCLConfig has no option 'tau'"):
        TokenizeConfig(quasid_cl=True, quasid_cl_options={"tau": 0.1}).validate()
    with pytest.raises(ConfigError, match="QuaSID mask='both'"):
        TokenizeConfig(quasid_cl=True, quasid_cl_options={"mask": "both"}).validate()
    with pytest.raises(ConfigError, match="needs >= 2 pairs"):
        QuaSIDCLConfig(batch_size=1)
    with pytest.raises(ConfigError, match="DAS CF reduction='max'"):
        TokenizeConfig(das_cf=True, das_cf_options={"reduction": "max"}).validate()
