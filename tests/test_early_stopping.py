"""`EarlyStopping` keeps the best state of every module trained together and puts it back into each."""

from __future__ import annotations

import torch
from torch import nn

from align3gr.early_stopping import EarlyStopping


def test_the_best_state_of_every_module_comes_back_and_patience_stops():
    torch.manual_seed(0)
    model, aligner = nn.Linear(3, 2), nn.Linear(2, 2)
    stopping = EarlyStopping([model, aligner, None], patience=2)  # None: an optional module that is off
    assert not stopping.update(0.5)
    best = [{k: v.clone() for k, v in module.state_dict().items()} for module in (model, aligner)]
    for module in (model, aligner):
        nn.init.zeros_(module.weight)
    assert not stopping.update(0.4) and stopping.update(0.5)  # a tie is no gain: the second epoch without one stops
    assert stopping.restore() == 0.5
    for module, state in zip((model, aligner), best, strict=True):
        assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())


def test_a_single_model_is_snapshotted_alone():
    model = nn.Linear(2, 2)
    stopping = EarlyStopping(model, patience=1)
    assert stopping.restore() == float("-inf")  # no epoch ran: nothing to put back
    stopping.update(1.0)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert stopping.update(0.0) and stopping.restore() == 1.0 and torch.equal(model.weight, before)
