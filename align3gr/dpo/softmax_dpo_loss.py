"""The Softmax-DPO loss (Align3GR Eq. 3; Chen et al. 2024, S-DPO), one chosen and K rejected.

With r = beta * (log pi_theta(y | x) - log pi_ref(y | x)) the implicit reward of a completion,

    L = -log sigmoid( -log sum_{y_l in Y_l} exp(r_l - r_w) )

per row. With K = 1 it is the sigmoid loss of DPO, -log sigmoid(r_w - r_l). Rows may hold fewer than K real
rejected completions: `rejected_mask` marks the real ones and the padding does not enter the sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional


@dataclass
class SoftmaxDPOOutput:
    """Per-row loss [B], the chosen reward [B] and the rejected rewards [B, K] (padding: -inf)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def softmax_dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    rejected_mask: torch.Tensor | None = None,
) -> SoftmaxDPOOutput:
    """Eq. 3 from sequence log-probabilities: chosen [B], rejected [B, K]; `rejected_mask` [B, K] (True: real)."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    if rejected_mask is not None:
        rejected_rewards = rejected_rewards.masked_fill(~rejected_mask, float("-inf"))
    log_sum = torch.logsumexp(rejected_rewards - chosen_rewards.unsqueeze(1), dim=1)
    return SoftmaxDPOOutput(-functional.logsigmoid(-log_sum), chosen_rewards, rejected_rewards)
