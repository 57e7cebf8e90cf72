"""Stage options from YAML files and flags: sections, flat files, defaults and unknown options."""

from __future__ import annotations

from pathlib import Path

import pytest

from align3gr.config import config_from_sources
from align3gr.dpo.config import DPOStageConfig
from align3gr.embed.config import EmbedConfig
from align3gr.errors import ConfigError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.pipeline.config import load_pipeline_config
from align3gr.sft.config import SFTStageConfig
from align3gr.tokenize.config import TokenizeConfig


def test_a_pipeline_file_gives_each_stage_its_section_and_defaults_elsewhere(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  user_k: 5\ndpo:\n  beta: 0.3\n  stages: [sp_easy]\n")
    dpo = config_from_sources(DPOStageConfig, path, {"num_rejected": 4})
    assert (dpo.beta, dpo.stages, dpo.num_rejected) == (0.3, ["sp_easy"], 4)
    assert config_from_sources(EmbedConfig, path) == EmbedConfig()


def test_a_flat_file_is_one_stages_options(tmp_path):
    path = tmp_path / "dpo.yaml"
    path.write_text("beta: 0.2\nstages: [rf_easy]\n")
    assert config_from_sources(DPOStageConfig, path).stages == ["rf_easy"]
    path.write_text("beta: 0.2\nbeam: 3\n")
    with pytest.raises(ConfigError, match="unknown option 'beam' for DPOStageConfig"):
        config_from_sources(DPOStageConfig, path)
    with pytest.raises(ConfigError, match="config file not found"):
        config_from_sources(DPOStageConfig, tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "path", sorted(Path(__file__).resolve().parent.parent.glob("recipes/configs/**/*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_recipe_config_loads_for_every_stage(path):
    for cls in (EmbedConfig, TokenizeConfig, SFTStageConfig, EvaluateConfig, DPOStageConfig):
        config_from_sources(cls, path)


def test_ranked_lists_must_reach_every_cut_off(tmp_path):
    """A ranked list holds beam_size items: Recall/NDCG@K past it would be those at beam_size under K's name; and a
    run's tables report @5 and @10."""
    with pytest.raises(ConfigError, match="beam_size=5 is below the largest cut-off K=10"):
        EvaluateConfig(beam_size=5).validate()
    EvaluateConfig(beam_size=5, ks=[1, 5]).validate()
    with pytest.raises(ConfigError, match="valid_beam_size=8: must be >= 10"):
        SFTStageConfig(valid_beam_size=8).validate()
    path = tmp_path / "run.yaml"
    path.write_text("evaluate:\n  ks: [10, 20]\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: evaluate\.ks=\[10, 20\] lacks \[5\]"):
        load_pipeline_config(path)
    path.write_text("evaluate:\n  ks: [5, 10, 20]\n  beam_size: 20\n")
    assert load_pipeline_config(path).evaluate.ks == [5, 10, 20]
