"""Early stopping on a validation score: keep the best model state, stop after `patience` epochs without gain."""

from __future__ import annotations

import copy

from torch import nn


class EarlyStopping:
    """Call `update(score)` after each epoch (higher is better); it returns True when training should stop.
    `restore()` puts the best state back into the model."""

    def __init__(self, model: nn.Module, patience: int) -> None:
        self.model = model
        self.patience = patience
        self.best = float("-inf")
        self.best_state: dict | None = None
        self.stale = 0

    def update(self, score: float) -> bool:
        if score > self.best:
            self.best, self.best_state, self.stale = score, copy.deepcopy(self.model.state_dict()), 0
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self) -> float:
        """Load the best state (if any epoch ran) and return its score."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.best
