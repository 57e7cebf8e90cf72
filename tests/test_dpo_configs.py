"""The shipped DPO configs: each loads, validates, and the Table 5 variants differ from the default only in stages
and the valid guard (off: the table compares what each variant's training does); the fill options and their
checks; the shared-prompt forwards the options name."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from align3gr.config import config_from_sources
from align3gr.dpo.checks import SHARED_PROMPT_FORWARDS
from align3gr.dpo.config import DPOStageConfig
from align3gr.dpo.shared_prompt import FORWARDS
from align3gr.errors import ConfigError
from align3gr.evaluate.config import EvaluateConfig

CONFIGS = Path(__file__).resolve().parent.parent / "recipes" / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "table5").glob("*.yaml")), ids=lambda p: p.stem)
def test_table5_variants_share_the_default_options(path):
    default = dataclasses.asdict(config_from_sources(DPOStageConfig, CONFIGS / "ml100k.yaml"))
    variant = dataclasses.asdict(config_from_sources(DPOStageConfig, path))
    own = ("stages", "guard")
    assert {k: v for k, v in variant.items() if k not in own} == {k: v for k, v in default.items() if k not in own}
    assert default["guard"] and not variant["guard"]


def test_the_five_variants_are_there():
    stages = {p.stem: config_from_sources(DPOStageConfig, p).stages for p in (CONFIGS / "table5").glob("*.yaml")}
    assert stages == {
        "softmax_dpo": ["sp_random"],
        "sp_dpo": ["sp_mixed"],
        "sp_dpo_progressive": ["sp_easy", "sp_medium", "sp_hard"],
        "rf_dpo": ["rf_mixed"],
        "rf_dpo_progressive": ["rf_easy", "rf_hard"],
    }


def test_the_default_rejects_the_policys_own_items_from_a_wide_beam():
    """Align3GR: SP-DPO rejects generated items only, RF-DPO the policy's rated candidates with the logged items as
    fallback; the beam is wider than the rejected count so the buckets find generated items."""
    for config in (DPOStageConfig(), config_from_sources(DPOStageConfig, CONFIGS / "ml100k.yaml")):
        config.validate()
        assert (config.sp_fill, config.rf_fill) == ("none", "logged")
        assert config.candidates > config.num_rejected


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


def test_the_forward_choices_name_the_forwards():
    """The options name the forwards apart from their torch module (listing them imports no torch): the same names."""
    assert tuple(FORWARDS) == SHARED_PROMPT_FORWARDS


@pytest.mark.parametrize("metric", ["ndcg@010", "recall@１０", "recall@0", "recall@", "recall@10 ", "mrr@10"])
def test_a_guard_metric_is_named_as_the_evaluation_names_its_metrics(metric):
    """K in ASCII digits without a leading zero: another spelling of the number would pass and then miss the valid
    metrics the guard compares, after the stage trained."""
    pattern = rf"^guard_metrics: {re.escape(repr(metric))} is not a valid-split metric; expected recall@K or ndcg@K"
    with pytest.raises(ConfigError, match=pattern):
        DPOStageConfig(guard=True, guard_metrics=[metric]).validate()
    with pytest.raises(ConfigError, match=pattern):
        DPOStageConfig(guard=True, guard_metrics=[metric]).valid_evaluation(EvaluateConfig(ks=[0, 10]))


def test_the_guard_needs_a_metric_to_compare():
    with pytest.raises(ConfigError, match=r"^guard_metrics=\[\]: with guard on, name at least one valid metric"):
        DPOStageConfig(guard=True, guard_metrics=[]).validate()
    DPOStageConfig(guard=False, guard_metrics=[]).validate()
    DPOStageConfig(guard=True, guard_metrics=["ndcg@5", "recall@10"]).validate()
