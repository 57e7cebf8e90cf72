"""The optional tokenizer regularisers on crafted batches: QuaSID HaMR + CVPM, AdaSID."""

from __future__ import annotations

import math

import pytest
import torch

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
