"""Behaviour-level alignment: prompt encoding, vocabulary extension, the task builders of Figure 3, loading."""

from __future__ import annotations

import json

import pytest
import torch

from align3gr.data.dataset import load_dataset
from align3gr.errors import ConfigError
from align3gr.models.loading import load_for_inference, load_model_and_tokenizer
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.sft.prompting import encode_completion, encode_prompt
from align3gr.sft.tasks import evaluation_prompts
from align3gr.sft.vocab import extend_vocabulary, scid_tokens


def code_tables(dataset) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Unique hand-made 3-level codes (8 x 8 x n) for every item and user of `dataset`."""
    items = {i: [f"<a_{k % 8}>", f"<b_{k // 8 % 8}>", f"<c_{k // 64}>"] for k, i in enumerate(dataset.items)}
    users = {u: [f"<ua_{k % 8}>", f"<ub_{k // 8 % 8}>", f"<uc_{k // 64}>"] for k, u in enumerate(dataset.sequences)}
    return items, users


@pytest.fixture(scope="module")
def small(ml100k_small):
    return load_dataset(ml100k_small)


@pytest.fixture(scope="module")
def tiny_qwen(small, tmp_path_factory):
    """A tiny Qwen2 (tied head, chat template, no BOS) trained on the small dataset's titles and profiles."""
    texts = [i.title for i in small.items.values()] + [u.profile for u in small.users.values()]
    return build_tiny_causal_lm(texts, tmp_path_factory.mktemp("tiny_qwen") / "model", vocab_size=600)


def test_prompt_encoding_uses_the_chat_template_or_bos_and_a_newline(tiny_qwen):
    _, tokenizer = load_model_and_tokenizer(tiny_qwen)
    ids = encode_prompt(tokenizer, "Toy Story?")
    assert tokenizer.decode(ids) == "<|im_start|>user\nToy Story?<|im_end|>\n<|im_start|>assistant\n"
    answer = encode_completion(tokenizer, "Toy Story")
    assert answer[-1] == tokenizer.eos_token_id and tokenizer.decode(answer[:-1]) == "Toy Story"

    tokenizer.chat_template = None
    assert tokenizer.decode(encode_prompt(tokenizer, "Toy Story?")) == "Toy Story?\n"  # Qwen style: no BOS
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    assert encode_prompt(tokenizer, "Hi")[0] == tokenizer.bos_token_id


def test_vocabulary_extension_adds_plain_tokens_padded_rows_at_the_mean(small, tiny_qwen):
    items, users = code_tables(small)
    tokens = scid_tokens(items, users)
    assert tokens[:3] == ["<a_0>", "<a_1>", "<a_2>"] and tokens[-1].startswith("<uc_")
    assert len(tokens) == len(set(tokens)) == 8 + 8 + len({c[2] for c in items.values()}) + 8 + 8 + 3
    assert scid_tokens(dict(reversed(items.items())), users) == tokens

    model, tokenizer = load_model_and_tokenizer(tiny_qwen)
    known, before = len(tokenizer), model.get_input_embeddings().weight[: len(tokenizer)].clone()
    ids = extend_vocabulary(model, tokenizer, tokens)
    weight = model.get_input_embeddings().weight
    assert ids == list(range(known, known + len(tokens)))
    assert weight.shape[0] % 64 == 0 and weight.shape[0] >= len(tokenizer)
    assert torch.equal(weight[:known], before)
    assert torch.allclose(weight[ids], before.mean(0).expand(len(ids), -1))
    assert model.get_output_embeddings().weight is weight  # still tied
    code = "".join(items[next(iter(items))])
    encoded = tokenizer.encode(code, add_special_tokens=False)
    assert len(encoded) == 3 and all(i in ids for i in encoded)
    assert tokenizer.decode(encoded) == code  # ordinary added tokens: decode keeps them

    with pytest.raises(ConfigError, match="already in the tokenizer"):
        extend_vocabulary(model, tokenizer, ["<a_0>"])
    with pytest.raises(ConfigError, match="init='random'"):
        extend_vocabulary(model, tokenizer, ["<z_0>"], init="random")


def test_text_initialisation_uses_the_titles_of_each_codes_items(small, tiny_qwen):
    from align3gr.sft.vocab import token_texts

    items, _ = code_tables(small)
    model, tokenizer = load_model_and_tokenizer(tiny_qwen)
    titles = {i: x.title for i, x in small.items.items()}
    texts = token_texts(items, titles)
    weight_before = model.get_input_embeddings().weight.detach().clone()
    ids = extend_vocabulary(model, tokenizer, scid_tokens(items, {}), init="text", texts=texts)
    first = tokenizer.convert_ids_to_tokens(ids[0])
    expected = torch.stack(
        [weight_before[tokenizer.encode(t, add_special_tokens=False)].mean(0) for t in texts[first]]
    ).mean(0)
    assert torch.allclose(model.get_input_embeddings().weight[ids[0]], expected, atol=1e-6)


def test_evaluation_prompts_cover_every_user_with_the_seq_template(small):
    items, users = code_tables(small)
    pairs = evaluation_prompts(small, items, users, "test")
    assert len(pairs) == len(small.sequences)
    example, prompt = pairs[0]
    seq = small.sequences[example.user_id]
    assert example.target == seq.items[-1] and example.history == tuple(seq.items[-21:-1])
    history = ", ".join("".join(items[i]) for i in example.history)
    assert prompt == (
        f"Based on the historical interactions of user {''.join(users[example.user_id])}: {history}, "
        "what should be recommended to the user next?"
    )
    _, anonymous = evaluation_prompts(small, items, users, "valid", with_user_scid=False, paraphrase=1)[0]
    assert anonymous.startswith("Here are the items the user interacted with, in order: ")
    with pytest.raises(ConfigError, match="paraphrase=9"):
        evaluation_prompts(small, items, users, "valid", paraphrase=9)
    with pytest.raises(ConfigError, match="split='train'"):
        evaluation_prompts(small, items, users, "train")


def test_full_model_folder_loads_for_inference(tiny_qwen):
    model, tokenizer = load_for_inference(tiny_qwen)
    assert not model.training and tokenizer.pad_token == "<|endoftext|>"
    with pytest.raises(ConfigError, match="dtype='fp8'"):
        load_model_and_tokenizer(tiny_qwen, dtype="fp8")
    with pytest.raises(ConfigError, match="cannot load a model config"):
        load_model_and_tokenizer(tiny_qwen.parent / "missing")
    assert json.loads((tiny_qwen / "config.json").read_text())["model_type"] == "qwen2"
