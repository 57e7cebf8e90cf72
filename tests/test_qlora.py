"""QLoRA for real on the CPU (bitsandbytes runs NF4 forward and backward there): SFT of the tiny Qwen2 with
`load_in_4bit` (NF4 base, LoRA, trained SCID rows), then a DPO stage on its adapter; both evaluated."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from test_dpo_stage import QUICK, VALID
from test_sft_stage import SMALL, scid  # noqa: F401 (fixture)

from align3gr.data.dataset import load_dataset
from align3gr.dpo.config import DPOStageConfig
from align3gr.dpo.stage import run_dpo
from align3gr.evaluate.stage import run_evaluate
from align3gr.models.loading import load_adapter, load_for_inference
from align3gr.scid.code_tables import load_code_tables
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.stage import run_sft, scid_model

ADAPTER = "adapter_model.safetensors"
OPTIONS = {**SMALL, "max_examples_per_task": 16, "tasks": ["seq", "item_align"], "eval_examples": 4}
QLORA = SFTStageConfig(use_lora=True, load_in_4bit=True, valid_users=8, warmup_steps=0, **OPTIONS)


def base_linears(model) -> set[str]:
    """Class names of the base layers under the LoRA targets (`q_proj`, ...) of a model or `PeftModel`."""
    layer = model.get_base_model().model.layers[0] if hasattr(model, "get_base_model") else model.model.layers[0]
    modules = [layer.self_attn.q_proj, layer.self_attn.v_proj, layer.mlp.down_proj]
    return {type(getattr(m, "base_layer", m)).__name__ for m in modules}


@pytest.fixture(scope="module")
def qlora_sft(ml100k_small, scid, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("qlora") / "sft"
    run_sft(ml100k_small, scid, out, QLORA)
    return out


@pytest.mark.slow
def test_qlora_sft_trains_an_adapter_that_loads_merged_and_evaluates(ml100k_small, scid, qlora_sft, tmp_path):  # noqa: F811
    import bitsandbytes as bnb

    dataset = load_dataset(ml100k_small)
    items, users = load_code_tables(scid, dataset)
    model, _, vocabulary, _ = scid_model(str(qlora_sft.parent / "sft_base"), dataset, items, users, QLORA)
    weight = model.model.layers[0].self_attn.q_proj.weight
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit) and weight.quant_type == "nf4"
    assert weight.dtype == torch.float32  # NF4 stored in the model's dtype, as FSDP needs
    assert vocabulary["embedding_rows"] == model.get_input_embeddings().weight.shape[0]

    adapter = load_file(qlora_sft / ADAPTER)
    assert all(adapter[k].abs().sum() > 0 for k in adapter if "lora_B" in k)  # LoRA B starts at zero: trained
    assert any("trainable_tokens_delta" in k and adapter[k].abs().sum() > 0 for k in adapter)

    trained = load_adapter(qlora_sft, trainable=True).eval()  # the adapter on its NF4 base, as DPO trains it
    merged, tokenizer = load_for_inference(qlora_sft)  # the base dequantized, the adapter merged into it
    assert base_linears(trained) == {"Linear4bit"} and base_linears(merged) == {"Linear"}
    assert not hasattr(merged.config, "quantization_config")
    ids = torch.tensor([tokenizer.encode("Toy Story <a_1><b_2><c_0>")])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, trained(input_ids=ids).logits, atol=1e-5)

    metrics = run_evaluate(qlora_sft, ml100k_small, tmp_path / "eval", VALID).metrics
    assert metrics["valid_rate"] == 1.0 and metrics["num_users"] == len(dataset.sequences)


@pytest.mark.slow
def test_an_adapter_trained_on_a_bf16_nf4_base_gets_that_base_in_any_dtype(qlora_sft, tmp_path):
    """NF4 codes depend on the dtype a base is quantized from: an adapter trained in bfloat16 and evaluated in float32
    is merged into the bfloat16-quantized base it trained on, cast to float32, not into a base quantized anew."""
    bf16 = tmp_path / "sft"
    shutil.copytree(qlora_sft, bf16)
    meta = json.loads((bf16 / "meta.json").read_text())
    meta["config"]["dtype"] = "bfloat16"
    (bf16 / "meta.json").write_text(json.dumps(meta))

    def down_proj(folder, dtype):
        model = load_adapter(folder, dtype).get_base_model()
        return model.model.layers[0].mlp.down_proj.base_layer.weight.detach()

    evaluated = down_proj(bf16, "float32")
    as_trained = down_proj(bf16, "bfloat16")
    assert evaluated.dtype == torch.float32 and as_trained.dtype == torch.bfloat16
    assert torch.equal(evaluated, as_trained.float())
    assert not torch.equal(evaluated, down_proj(qlora_sft, "float32"))  # quantized from float32: other codes


@pytest.mark.slow
def test_dpo_trains_the_qlora_adapter_on_its_nf4_base(ml100k_small, qlora_sft, tmp_path):
    config = DPOStageConfig(stages=["sp_easy"], candidates=8, **QUICK)
    (result,) = run_dpo(ml100k_small, qlora_sft, tmp_path / "dpo", config, evaluate=VALID)
    folder = tmp_path / "dpo" / "sp_easy"
    assert result.meta["adapter"] and result.meta["config"]["load_in_4bit"] and result.meta["steps"] == 2
    assert result.valid_metrics["valid_rate"] == 1.0
    before, after = load_file(qlora_sft / ADAPTER), load_file(folder / ADAPTER)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in before if "lora_" in k)
    assert base_linears(load_adapter(folder, trainable=True)) == {"Linear4bit"}
    model, _ = load_for_inference(folder)
    assert base_linears(model) == {"Linear"} and not model.training
