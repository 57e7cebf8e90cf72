"""LoRA with added SCID tokens (tied Qwen2 and untied Llama heads): what trains, and save/reload."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from align3gr.models.loading import META_FILE, load_for_inference, load_model_and_tokenizer
from align3gr.models.lora import save_trained_rows_only
from align3gr.models.tiny import build_tiny_causal_lm, train_tokenizer
from align3gr.scid.vocabulary import extend_vocabulary
from align3gr.sft.data import encode_examples
from align3gr.sft.lora import scid_lora_config
from align3gr.sft.tasks import SFTExample

TOKENS = [f"<a_{k}>" for k in range(8)] + [f"<b_{k}>" for k in range(8)]
TEXTS = ["Toy Story", "GoldenEye", "Four Rooms", "Get Shorty", "A 24-year-old male technician."] * 4


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny LlamaForCausalLM with an untied head, a BOS token and no chat template (plain-text prompts)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_llama") / "model"
    tokenizer = train_tokenizer(TEXTS, 300, 256)
    tokenizer.chat_template = None
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    return build_tiny_causal_lm(TEXTS, tmp_path_factory.mktemp("tiny_qwen_lora") / "model", vocab_size=300)


def batch(tokenizer):
    examples = [SFTExample("seq", "After Toy Story comes", f"<a_{k}><b_{k + 1}>") for k in range(1, 5)]
    rows = encode_examples(examples, tokenizer, 256)
    ids = torch.tensor(rows["input_ids"])  # one prompt, answers of one length: no padding needed
    labels = torch.where(torch.tensor(rows["completion_mask"]) == 1, ids, -100)
    return ids, labels


@pytest.mark.parametrize("base", ["tiny_qwen", "tiny_llama"])
def test_lora_trains_the_new_rows_on_both_sides_and_nothing_else(base, request, tmp_path):
    from peft import get_peft_model

    folder = request.getfixturevalue(base)
    model, tokenizer = load_model_and_tokenizer(folder)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == (base == "tiny_qwen")
    known = len(tokenizer)
    new_ids = extend_vocabulary(model, tokenizer, TOKENS)
    model = get_peft_model(model, scid_lora_config(model, new_ids, 4, 8, 0.0, ["q_proj", "v_proj"]))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert all("lora_" in n or "trainable_tokens" in n for n, p in model.named_parameters() if p.requires_grad)
    every = torch.arange(model.get_input_embeddings().weight.shape[0])
    probe = torch.randn(1, 32 if base == "tiny_llama" else 64)
    with torch.no_grad():
        rows_before = model.get_input_embeddings()(every).clone()
        logits_before = model.get_output_embeddings()(probe).clone()

    ids, labels = batch(tokenizer)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(input_ids=ids, labels=labels).loss.backward()
    optimizer.step()

    for name, value in frozen.items():
        assert torch.equal(value, dict(model.named_parameters())[name]), name
    with torch.no_grad():
        rows_after = model.get_input_embeddings()(every)
        logits_after = model.get_output_embeddings()(probe)
    changed = (rows_after != rows_before).any(-1).nonzero().flatten().tolist()
    assert set(changed) <= set(new_ids) and {tokenizer.convert_tokens_to_ids(t) for t in ("<a_1>", "<b_2>")} <= set(
        changed
    )
    assert torch.equal(logits_after[:, :known], logits_before[:, :known])
    assert not torch.equal(logits_after[:, new_ids], logits_before[:, new_ids])

    save_trained_rows_only(model)  # as the stages' trainers save it
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    rows = model.get_input_embeddings().weight.shape[0]
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert not [k for k, v in saved.items() if v.shape[0] == rows], "whole embedding matrices saved with the adapter"
    assert any("trainable_tokens" in k for k in saved)
    vocabulary = {"base_vocab_size": known, "embedding_rows": rows}
    (tmp_path / META_FILE).write_text(json.dumps({"vocabulary": vocabulary}))
    reloaded, reloaded_tokenizer = load_for_inference(tmp_path)
    assert len(reloaded_tokenizer) == len(tokenizer) and not reloaded.training
    model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
