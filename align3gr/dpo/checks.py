"""The choices and checks of the DPO options, apart from the modules that use them (torch): listing the `dpo` options
or checking a config imports nothing heavy."""

from __future__ import annotations

from align3gr.errors import ConfigError

SP_FILLS = ("none", "catalogue")
"""How a self-play row short of its bucket is filled (`align3gr.dpo.preferences.self_play_examples`)."""
RF_FILLS = ("logged", "none")
"""How a real-feedback row short of rejected items is filled (`align3gr.dpo.preferences.real_feedback_examples`)."""
SHARED_PROMPT_FORWARDS = ("plain", "packed", "cache")
"""The names of the forwards that score a prompt's 1 + K completions (`align3gr.dpo.shared_prompt.FORWARDS`)."""


def check_prefix_thresholds(medium_min: int, hard_min: int, levels: int | None = None, source: str = "") -> None:
    """0 < medium_min <= hard_min, and hard_min < levels once the SCIDs' length is known (from the code table
    `source`, when given)."""
    if not 0 < medium_min <= hard_min or (levels is not None and hard_min >= levels):
        of = f" for {levels}-level SCIDs" if levels is not None else ""
        of += f" ({source})" if source else ""
        raise ConfigError(
            f"SP-DPO bucket thresholds need 0 < medium_min <= hard_min < levels; got medium_min={medium_min}, "
            f"hard_min={hard_min}{of}"
        )


def check_similarity_shares(medium_share: float, hard_share: float) -> None:
    """0 < hard_share, 0 < medium_share, and the two leave an easy share."""
    if not (0 < hard_share and 0 < medium_share and hard_share + medium_share < 1):
        raise ConfigError(
            f"similarity buckets need 0 < hard_share, 0 < medium_share, hard_share + medium_share < 1; got "
            f"hard_share={hard_share}, medium_share={medium_share}"
        )
