"""Early stopping on a validation score: keep the best state of the trained modules, stop after `patience` epochs
without gain."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn


class EarlyStopping:
    """Call `update(score)` after each epoch (higher is better); it returns True when training should stop.
    `restore()` puts the best state back into every module trained: `modules` is the model, or a sequence of the
    modules trained together (a None in it is skipped, for an optional one), whose best states are one snapshot."""

    def __init__(self, modules: nn.Module | Sequence[nn.Module | None], patience: int) -> None:
        listed = [modules] if isinstance(modules, nn.Module) else modules
        self.modules = [module for module in listed if module is not None]
        self.patience = patience
        self.best = float("-inf")
        self.best_state: list[dict] | None = None
        self.stale = 0

    def update(self, score: float) -> bool:
        if score > self.best:
            self.best, self.stale = score, 0
            self.best_state = [copy.deepcopy(module.state_dict()) for module in self.modules]
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self) -> float:
        """Load the best state (if any epoch ran) into every module and return its score."""
        if self.best_state is not None:
            for module, state in zip(self.modules, self.best_state, strict=True):
                module.load_state_dict(state)
        return self.best
