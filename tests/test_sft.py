"""Behaviour-level alignment: prompt encoding, vocabulary extension, the task builders of Figure 3, loading."""

from __future__ import annotations

import json

import pytest
import torch

from align3gr.data.dataset import load_dataset
from align3gr.errors import ConfigError
from align3gr.models.loading import load_for_inference, load_model_and_tokenizer
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.scid.tokens import scid_tokens
from align3gr.scid.vocabulary import extend_vocabulary
from align3gr.sft.data import encode_example
from align3gr.sft.prompting import encode_completion, encode_prompt
from align3gr.sft.tasks import TaskBuilder, evaluation_prompts


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
    from align3gr.scid.vocabulary import token_texts

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


@pytest.fixture(scope="module")
def scid_tokenizer(small, tiny_qwen):
    """The tiny tokenizer with the code tokens of `code_tables(small)` added."""
    items, users = code_tables(small)
    model, tokenizer = load_model_and_tokenizer(tiny_qwen)
    extend_vocabulary(model, tokenizer, scid_tokens(items, users))
    return tokenizer


def test_evaluation_prompts_cover_every_user_with_the_seq_template(small, scid_tokenizer):
    items, users = code_tables(small)
    pairs = evaluation_prompts(small, items, users, "test", scid_tokenizer)
    assert len(pairs) == len(small.sequences)
    example, prompt = pairs[0]
    seq = small.sequences[example.user_id]
    assert example.target == seq.items[-1] and example.history == tuple(seq.items[-21:-1])
    history = ", ".join("".join(items[i]) for i in example.history)
    assert prompt == encode_prompt(
        scid_tokenizer,
        f"Based on the historical interactions of user {''.join(users[example.user_id])}: {history}, "
        "what should be recommended to the user next?",
    )
    _, anonymous = evaluation_prompts(small, items, users, "valid", scid_tokenizer, with_user_scid=False, paraphrase=1)[
        0
    ]
    assert "Here are the items the user interacted with, in order: " in scid_tokenizer.decode(anonymous)
    with pytest.raises(ConfigError, match="paraphrase=9"):
        evaluation_prompts(small, items, users, "valid", scid_tokenizer, paraphrase=9)
    with pytest.raises(ConfigError, match="split='train'"):
        evaluation_prompts(small, items, users, "train", scid_tokenizer)
    with pytest.raises(ConfigError, match="seq_format='free'"):
        evaluation_prompts(small, items, users, "valid", scid_tokenizer, seq_format="free")


def test_stream_rows_hold_every_prompt_of_their_window_and_train_on_the_code_tokens(small, scid_tokenizer):
    """A stream row cut before any listed item is, token for token, the prompt evaluation builds for the history
    before it; the loss mask is 1 on the code tokens of every listed item and nowhere else."""
    items, users = code_tables(small)
    builder = TaskBuilder(small, items, users, seq_format="stream", stream_stride=7)
    rows = list(builder.seq())
    user = rows[0].user_id
    train = small.train_items(user)
    windows = [row.items for row in rows if row.user_id == user]
    width = small.max_history + 1
    assert windows[0] == tuple(train[-width:]) and windows[1] == tuple(train[-width - 7 : -7])
    assert {i for w in windows for i in w} == set(train)  # every training item is a target
    TaskBuilder(small, items, users, seq_format="stream", stream_stride=width)  # adjacent windows: still every item
    with pytest.raises(ConfigError, match=f"stream_stride={width + 1}: must be at most max_history \\+ 1 = {width}"):
        TaskBuilder(small, items, users, seq_format="stream", stream_stride=width + 1)
    row = rows[0]
    ids, mask = encode_example(row, scid_tokenizer)
    template = next(t for t in builder.templates["seq_stream"] if row.prompt == t.format(user=builder.user_ref(user)))
    start = len(encode_prompt(scid_tokenizer, row.prompt))
    code_positions = [p for p in range(len(ids)) if mask[p]]
    assert len(code_positions) == 3 * len(row.items)
    assert scid_tokenizer.convert_ids_to_tokens([ids[p] for p in code_positions]) == [
        c for i in row.items for c in items[i]
    ]
    for k, item in enumerate(row.items):
        history = row.items[:k]
        prompt = builder.seq_prompt_ids(scid_tokenizer, user, history, template)
        position = code_positions[3 * k]
        assert ids[:position] == prompt and position >= start
        assert ids[position : position + 3] == builder.seq_answer_ids(scid_tokenizer, item)


def test_full_model_folder_loads_for_inference(tiny_qwen):
    model, tokenizer = load_for_inference(tiny_qwen)
    assert not model.training and tokenizer.pad_token == "<|endoftext|>"
    with pytest.raises(ConfigError, match="dtype='fp8'"):
        load_model_and_tokenizer(tiny_qwen, dtype="fp8")
    with pytest.raises(ConfigError, match="cannot load a model config"):
        load_model_and_tokenizer(tiny_qwen.parent / "missing")
    assert json.loads((tiny_qwen / "config.json").read_text())["model_type"] == "qwen2"


def hand_made_dataset():
    """Two users over six items with known titles, intentions and preference statements."""
    from align3gr.data.dataset import Dataset
    from align3gr.data.schema import Item, Sequence, User

    items = {f"i{k}": Item(f"i{k}", f"Film {k}", f"Film {k} (199{k}). Genres: Drama.") for k in range(6)}
    users = {"u1": User("u1", "A 30-year-old writer."), "u2": User("u2", "")}
    sequences = {
        "u1": Sequence("u1", ["i0", "i1", "i2", "i3", "i4"], [1, 2, 3, 4, 5]),
        "u2": Sequence("u2", ["i5", "i4", "i3", "i2"], [1, 2, 3, 4]),
    }
    dataset = Dataset(items=items, users=users, sequences=sequences, meta={"max_history": 20})
    dataset.intentions = [
        {"user_id": "u1", "item_id": "i1", "query": "Something calm."},
        {"user_id": "u1", "item_id": "i4", "query": "The test target."},  # a test target: never used
    ]
    dataset.preferences = {"u1": "The user enjoys Drama."}
    codes = {f"i{k}": [f"<a_{k}>", f"<b_{k % 2}>"] for k in range(6)}
    return dataset, codes, {"u1": ["<ua_0>", "<ub_1>"], "u2": ["<ua_1>", "<ub_0>"]}


def first_paraphrases():
    from align3gr.sft.tasks import load_templates

    return {kind: paraphrases[:1] for kind, paraphrases in load_templates().items()}


def test_every_task_builder_gives_its_prompts_and_completions():
    from align3gr.sft.tasks import TaskBuilder

    dataset, items, users = hand_made_dataset()
    builder = TaskBuilder(dataset, items, users, templates=first_paraphrases())
    got = {task: [(e.prompt, e.completion) for e in builder.builders[task]()] for task in builder.builders}
    u1 = "user <ua_0><ub_1>"
    assert got["seq"] == [
        (f"Based on the historical interactions of {u1}: <a_0><b_0>, what should be recommended to the user next?",
         "<a_1><b_1>"),
        (f"Based on the historical interactions of {u1}: <a_0><b_0>, <a_1><b_1>, what should be recommended to the "
         "user next?", "<a_2><b_0>"),
        ("Based on the historical interactions of user <ua_1><ub_0>: <a_5><b_1>, what should be recommended to the "
         "user next?", "<a_4><b_0>"),
    ]  # fmt: skip
    assert got["item_align"][:3] == [
        ('Which item has the title "Film 0"?', "<a_0><b_0>"),
        ("An item is described as: Film 0 (1990). Genres: Drama. Which item is it?", "<a_0><b_0>"),
        ("What is the title of item <a_0><b_0>?", "Film 0"),
    ]
    assert got["user_align"] == [  # u2 has no profile
        ("Which user has this profile: A 30-year-old writer.", "<ua_0><ub_1>"),
        ("Describe user <ua_0><ub_1>.", "A 30-year-old writer."),
    ]
    assert got["asym_title"][1] == (
        f"Based on the historical interactions of {u1}: <a_0><b_0>, <a_1><b_1>, what is the title of the item to "
        "recommend next?",
        "Film 2",
    )
    assert got["asym_item"][1] == (
        f'Given the titles of the items {u1} interacted with: "Film 0", "Film 1", recommend a suitable next item.',
        "<a_2><b_0>",
    )
    assert got["intention"] == [
        (f'Suppose you are a search engine. {u1} searches: "Something calm." Can you select an item to respond to '
         "the query?", "<a_1><b_1>"),
    ]  # fmt: skip
    assert got["preference"] == [
        (f'Given the items {u1} interacted with: "Film 0", "Film 1", "Film 2", what can be inferred about the '
         "user's preferences?", "The user enjoys Drama."),
    ]  # fmt: skip
    anonymous = TaskBuilder(dataset, items, users, with_user_scid=False, templates=first_paraphrases())
    assert next(anonymous.seq()).prompt.startswith("Based on the historical interactions of the user: <a_0><b_0>")
    with pytest.raises(ConfigError, match="user_codes.json is empty"):
        TaskBuilder(dataset, items, {})


def test_holdout_leaves_each_users_last_training_items_out_of_every_task():
    from align3gr.sft.tasks import TaskBuilder

    dataset, items, users = hand_made_dataset()
    # u1 trains on i0 i1 i2 (i1: an intention's item), u2 on i5 i4; holding out one leaves i0 i1 and i5
    builder = TaskBuilder(dataset, items, users, templates=first_paraphrases(), holdout=1)
    got = {task: [(e.items, e.completion) for e in builder.builders[task]()] for task in builder.builders}
    assert got["seq"] == got["asym_item"] == [(("i0", "i1"), "<a_1><b_1>")]
    assert got["asym_title"] == [(("i0", "i1"), "Film 1")]
    assert got["intention"] == [(("i1",), "<a_1><b_1>")]
    assert got["preference"] == [(("i0", "i1"), "The user enjoys Drama.")]
    stream = TaskBuilder(dataset, items, users, templates=first_paraphrases(), seq_format="stream", holdout=1)
    assert [e.items for e in stream.seq()] == [("i0", "i1"), ("i5",)]
    for form in ("prompt", "stream"):  # a holdout longer than a training part leaves none of it
        assert list(TaskBuilder(dataset, items, users, seq_format=form, holdout=3).seq()) == []


@pytest.mark.parametrize("holdout", [0, 1])
def test_no_valid_or_test_target_reaches_a_training_example(ml100k, holdout):
    from align3gr.dpo.stage import training_prompts
    from align3gr.sft.tasks import TASKS, TaskBuilder

    full = load_dataset(ml100k)
    items, users = code_tables(full)
    held_out = {u: set(s.items[-2 - holdout :]) for u, s in full.sequences.items()}
    examples = TaskBuilder(full, items, users, holdout=holdout).build(TASKS)
    if holdout:  # the DPO stages' most recent prompt asks for the item SFT never saw
        assert [target for _, _, target in training_prompts(full, 1)] == [s.items[-3] for s in full.sequences.values()]
    assert {e.task for e in examples} == set(TASKS)
    for example in examples:
        if example.user_id is None:
            continue
        text = example.prompt + example.completion
        for target in held_out[example.user_id]:
            assert target not in example.items and "".join(items[target]) not in text


def test_bad_inputs_fail_before_training(small, tmp_path, monkeypatch):
    from align3gr.config import config_from_sources
    from align3gr.sft.config import SFTStageConfig
    from align3gr.sft.tasks import load_templates

    with pytest.raises(ConfigError, match="tasks is empty"):
        config_from_sources(SFTStageConfig, overrides={"tasks": []})
    with pytest.raises(ConfigError, match="'B3' in the list: expected one of seq, "):
        config_from_sources(SFTStageConfig, overrides={"tasks": ["seq", "B3"]})
    with pytest.raises(ConfigError, match="no resizable input embedding"):
        extend_vocabulary(torch.nn.Linear(2, 2), _tokenizer_of(small), ["<a_0>"])
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "sft_tasks.yaml").write_text("seq: 'History {history} of {usr}'\n")
    monkeypatch.setenv("ALIGN3GR_PROMPTS", str(prompts))
    with pytest.raises(ConfigError, match=r"sft_tasks.yaml: 'seq': .* uses \['usr'\]"):
        load_templates()


def _tokenizer_of(dataset):
    from align3gr.models.tiny import train_tokenizer

    return train_tokenizer([i.title for i in dataset.items.values()], 300, 64)
