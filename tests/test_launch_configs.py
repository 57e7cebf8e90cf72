"""The accelerate configs under `accelerate_configs/` against what the stages do with them: precision stays the
stage's option, and the FSDP-QLoRA config wraps an align3gr adapter (trainable SCID rows beside frozen weights)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "accelerate_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_a_launch_config_leaves_precision_to_the_stages_bf16_option(path, tmp_path, monkeypatch):
    """Transformers starts from the launcher's ACCELERATE_MIXED_PRECISION and only overrides it to turn bf16 on:
    a config's `mixed_precision: bf16` would train in bf16 whatever `bf16: false` (or the default off on CPUs and
    GPUs without native bf16) says."""
    from align3gr.sft.arguments import sft_arguments
    from align3gr.sft.config import SFTStageConfig

    config = yaml.safe_load(path.read_text())
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", str(config.get("mixed_precision", "no")))
    assert sft_arguments(SFTStageConfig(bf16=False), tmp_path, eval_steps=500).mixed_precision == "no"


def test_the_fsdp_qlora_config_wraps_an_adapter_with_trainable_scid_rows(tmp_path):
    """FSDP1 with `use_orig_params: false` refuses a unit mixing frozen and trainable tensors, which PEFT's wrap
    policy leaves in the root for the trainable token rows of `scid_lora_config`; one gloo process on the CPU."""
    options = yaml.safe_load((ROOT / "accelerate_configs" / "fsdp_qlora.yaml").read_text())["fsdp_config"]
    script = textwrap.dedent(f"""
        import os, torch, torch.distributed as dist
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29561")
        dist.init_process_group("gloo", rank=0, world_size=1)
        from peft import get_peft_model
        from peft.utils.other import fsdp_auto_wrap_policy
        from torch.distributed.fsdp import FullyShardedDataParallel
        from transformers import LlamaConfig, LlamaForCausalLM
        from align3gr.sft.lora import scid_lora_config
        model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4))
        model = get_peft_model(model, scid_lora_config(model, [120, 121], 4, 8, 0.0, ["q_proj", "v_proj"]))
        FullyShardedDataParallel(model, auto_wrap_policy=fsdp_auto_wrap_policy(model),
                                 use_orig_params={options["fsdp_use_orig_params"]!r}, device_id=torch.device("cpu"))
        print("wrapped")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0 and "wrapped" in done.stdout, done.stderr[-2000:]
