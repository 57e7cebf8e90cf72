"""The shipped DPO configs: each loads, validates, and the Table 5 variants differ from the default only in stages
and the valid guard (off: the table compares what each variant's training does); the fill options and their
checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from align3gr.config import config_from_sources
from align3gr.dpo.config import DPOStageConfig
from align3gr.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "recipes" / "configs"
PAPER_NEGATIVES = {"candidates": 50, "sp_fill": "none", "beta": 0.1}
"""The rejected items of Align3GR's DPO stages (the options' defaults, and the Table 5 configs')."""


@pytest.mark.parametrize("path", sorted((CONFIGS / "table5").glob("*.yaml")), ids=lambda p: p.stem)
def test_table5_variants_share_the_default_options(path):
    default = dataclasses.asdict(config_from_sources(DPOStageConfig, CONFIGS / "ml100k.yaml"))
    variant = dataclasses.asdict(config_from_sources(DPOStageConfig, path))
    own = ("stages", "guard", *PAPER_NEGATIVES)
    assert {k: v for k, v in variant.items() if k not in own} == {k: v for k, v in default.items() if k not in own}
    assert default["guard"] and not variant["guard"]
    assert {k: variant[k] for k in PAPER_NEGATIVES} == PAPER_NEGATIVES


def test_the_five_variants_are_there():
    stages = {p.stem: config_from_sources(DPOStageConfig, p).stages for p in (CONFIGS / "table5").glob("*.yaml")}
    assert stages == {
        "softmax_dpo": ["sp_random"],
        "sp_dpo": ["sp_mixed"],
        "sp_dpo_progressive": ["sp_easy", "sp_medium", "sp_hard"],
        "rf_dpo": ["rf_mixed"],
        "rf_dpo_progressive": ["rf_easy", "rf_hard"],
    }


def test_the_options_default_to_the_papers_rejected_items_and_the_recipe_fills_from_the_catalogue():
    """Align3GR: SP-DPO rejects generated items only, RF-DPO the policy's rated candidates with the logged items as
    fallback; the beam is wider than the rejected count so the buckets find generated items. The ML-100K recipe, chosen
    on valid, takes the policy's top candidate and fills each self-play row from the catalogue's bucket instead."""
    paper = DPOStageConfig()
    paper.validate()
    assert (paper.sp_fill, paper.rf_fill) == ("none", "logged") and paper.candidates > paper.num_rejected
    assert {k: getattr(paper, k) for k in PAPER_NEGATIVES} == PAPER_NEGATIVES
    recipe = config_from_sources(DPOStageConfig, CONFIGS / "ml100k.yaml")
    recipe.validate()
    assert (recipe.sp_fill, recipe.rf_fill, recipe.candidates, recipe.beta) == ("catalogue", "logged", 1, 1.0)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"sp_fill": "random"}, "sp_fill='random': expected one of none, catalogue"),
        ({"rf_fill": "catalogue"}, "rf_fill='catalogue': expected one of logged, none"),
        ({"candidates": 10, "num_rejected": 20}, "candidates=10 < num_rejected=20: with sp_fill='none'"),
    ],
)
def test_bad_fill_options_are_refused(options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        DPOStageConfig(**options).validate()


def test_a_narrow_beam_is_fine_with_catalogue_fill_or_without_self_play():
    DPOStageConfig(candidates=10, num_rejected=20, sp_fill="catalogue").validate()
    DPOStageConfig(stages=["rf_easy", "rf_hard"], candidates=10, num_rejected=20).validate()
