"""The shipped DPO configs: each loads, validates, and the Table 5 variants differ from the default only in stages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from align3gr.config import config_from_sources
from align3gr.dpo.config import DPOStageConfig

CONFIGS = Path(__file__).resolve().parent.parent / "recipes" / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "table5").glob("*.yaml")), ids=lambda p: p.stem)
def test_table5_variants_share_the_default_options(path):
    default = dataclasses.asdict(config_from_sources(DPOStageConfig, CONFIGS / "ml100k.yaml"))
    variant = dataclasses.asdict(config_from_sources(DPOStageConfig, path))
    assert {k: v for k, v in variant.items() if k != "stages"} == {k: v for k, v in default.items() if k != "stages"}


def test_the_five_variants_are_there():
    stages = {p.stem: config_from_sources(DPOStageConfig, p).stages for p in (CONFIGS / "table5").glob("*.yaml")}
    assert stages == {
        "softmax_dpo": ["sp_random"],
        "sp_dpo": ["sp_mixed"],
        "sp_dpo_progressive": ["sp_easy", "sp_medium", "sp_hard"],
        "rf_dpo": ["rf_mixed"],
        "rf_dpo_progressive": ["rf_easy", "rf_hard"],
    }
