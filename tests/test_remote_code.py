"""A base model with its own code (`trust_remote_code`): every stage that loads what SFT trained from it runs that
code only when told to, and says how to tell it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sft_lora import TEXTS
from test_sft_stage import scid  # noqa: F401 (fixture)

from align3gr.dpo.arguments import load_policy
from align3gr.errors import ConfigError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.evaluate.stage import run_evaluate
from align3gr.hub.recommender import load_recommender
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.pipeline.config import load_pipeline_config
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.stage import run_sft

CONFIGURATION = """from transformers import Qwen2Config


class CustomConfig(Qwen2Config):
    model_type = "custom_qwen"
"""
MODELING = """from transformers import Qwen2ForCausalLM

from .configuration_custom import CustomConfig


class CustomForCausalLM(Qwen2ForCausalLM):
    config_class = CustomConfig
"""


@pytest.fixture(scope="module")
def custom_base(tmp_path_factory) -> Path:
    """A tiny Qwen2 whose config and model classes are the checkpoint's own code (`auto_map`)."""
    folder = build_tiny_causal_lm(TEXTS, tmp_path_factory.mktemp("custom") / "model", vocab_size=300, hidden_size=32)
    (folder / "configuration_custom.py").write_text(CONFIGURATION)
    (folder / "modeling_custom.py").write_text(MODELING)
    config = json.loads((folder / "config.json").read_text())
    config |= {
        "model_type": "custom_qwen",
        "architectures": ["CustomForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("use_lora", [False, True])
def test_custom_code_runs_again_where_trusted(custom_base, ml100k_small, scid, tmp_path, use_lora):  # noqa: F811
    options = {"model": str(custom_base), "trust_remote_code": True, "use_lora": use_lora, "max_steps": 1}
    options |= {"tasks": ["seq"], "max_examples_per_task": 8, "eval_examples": 4, "per_device_train_batch_size": 4}
    sft = run_sft(ml100k_small, scid, tmp_path / "sft", SFTStageConfig(**options, valid_users=0)).path
    evaluation = {"beam_size": 10, "batch_size": 64}
    with pytest.raises(ConfigError, match=r"custom code.*trust_remote_code: true in the sections of the stages"):
        run_evaluate(sft, ml100k_small, tmp_path / "eval", EvaluateConfig(**evaluation))
    assert not (tmp_path / "eval").exists()
    trusted = EvaluateConfig(**evaluation, trust_remote_code=True)
    metrics = run_evaluate(sft, ml100k_small, tmp_path / "eval", trusted).metrics
    assert metrics["num_users"] > 0 and 0 <= metrics["recall@10"] <= 1
    with pytest.raises(ConfigError, match="custom code"):
        load_policy(sft)  # a DPO stage's start
    policy, _ = load_policy(sft, trust_remote_code=True)
    assert type(policy.get_base_model() if use_lora else policy).__name__ == "CustomForCausalLM"
    recommender = load_recommender(sft, trust_remote_code=True)
    assert type(recommender.model).__name__ == "CustomForCausalLM"


def test_the_pipeline_passes_sfts_trust_on(tmp_path):
    """The pipeline's evaluations and DPO stages load SFT's model, so they run its code when SFT was told to."""
    config = tmp_path / "run.yaml"
    config.write_text("sft:\n  trust_remote_code: true\n")
    trusting = load_pipeline_config(config)
    assert trusting.evaluate.trust_remote_code and trusting.dpo.trust_remote_code
    config.write_text("sft:\n  trust_remote_code: false\n")
    plain = load_pipeline_config(config)
    assert not plain.evaluate.trust_remote_code and not plain.dpo.trust_remote_code
