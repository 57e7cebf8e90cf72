"""The SCID trie and the three decoders on a tiny Qwen2 model: agreement, validity, neutralised generation settings."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from align3gr.data.dataset import load_dataset
from align3gr.decode import BeamSearchDecoder, ExhaustiveDecoder, GenerateDecoder, build_decoder
from align3gr.decode.base import best_first
from align3gr.decode.trie import DEAD, SCIDTrie, trie_for_model
from align3gr.errors import ConfigError, DataError
from align3gr.io import write_json
from align3gr.models.loading import load_for_inference
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.scid.tokens import scid_tokens
from align3gr.scid.vocabulary import extend_vocabulary
from align3gr.seeding import seeded
from align3gr.sft.tasks import evaluation_prompts


def crafted_codes(ids: list[str], prefix: str) -> dict[str, list[str]]:
    """Unique 3-level codes (8 x 8 x n) for `ids` in sorted order: a small, deep enough trie."""
    return {
        key: [f"<{prefix}a_{i % 8}>", f"<{prefix}b_{(i // 8) % 8}>", f"<{prefix}c_{i // 64}>"]
        for i, key in enumerate(sorted(ids))
    }


def build_scid_model(data_dir: Path, folder: Path, seed: int = 0) -> Path:
    """An `sft/`-like folder: tiny Qwen2 with the SCID tokens of crafted code tables (random code embeddings, so
    the model ranks items), its tokenizer, `item_codes.json` and `user_codes.json`."""
    from transformers import AutoTokenizer

    dataset = load_dataset(data_dir)
    items, users = crafted_codes(list(dataset.items), ""), crafted_codes(list(dataset.sequences), "u")
    texts = [item.title for item in dataset.items.values()] + ["The user has interacted with these items"] * 20
    base = build_tiny_causal_lm(texts, folder.parent / f"{folder.name}-base", vocab_size=600, seed=seed)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    new_ids = extend_vocabulary(model, tokenizer, scid_tokens(items, users))
    with torch.no_grad(), seeded(seed) as generator:
        weight = model.get_input_embeddings().weight
        weight[new_ids] = torch.randn(len(new_ids), weight.shape[1], generator=generator)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(folder / "item_codes.json", items)
    write_json(folder / "user_codes.json", users)
    return folder


@pytest.fixture(scope="module")
def scid_model(ml100k_small, tmp_path_factory):
    return build_scid_model(ml100k_small, tmp_path_factory.mktemp("scid_model") / "sft")


@pytest.fixture(scope="module")
def histories(ml100k_small):
    """The whole valid-split history of the users of `loaded`'s prompts (longer than the prompt's 20 for most)."""
    dataset = load_dataset(ml100k_small)
    return [dataset.seen_before(ex.user_id, "valid") for ex in dataset.examples("valid")[:6]]


@pytest.fixture(scope="module")
def loaded(scid_model, ml100k_small):
    """(model, tokenizer, trie, prompts of 6 valid users)."""
    model, tokenizer = load_for_inference(scid_model)
    items = json.loads((scid_model / "item_codes.json").read_text())
    users = json.loads((scid_model / "user_codes.json").read_text())
    prompts = [ids for _, ids in evaluation_prompts(load_dataset(ml100k_small), items, users, "valid", tokenizer)[:6]]
    return model, tokenizer, trie_for_model(items, tokenizer, model), prompts


def test_trie_paths_masks_and_steps():
    vocab = {f"<{p}_{i}>": 10 + 10 * j + i for j, p in enumerate("abc") for i in range(4)}
    codes = {"x": ["<a_0>", "<b_1>", "<c_2>"], "y": ["<a_0>", "<b_1>", "<c_3>"], "z": ["<a_2>", "<b_0>", "<c_0>"]}
    trie = SCIDTrie.build(codes, vocab, vocab_size=64)
    assert len(trie) == 3 and trie.depth == 3
    root = torch.zeros(1, dtype=torch.long)
    assert trie.allowed_mask(root, 0)[0].nonzero().flatten().tolist() == [10, 12]
    node = trie.step(root, torch.tensor([10]), 0)
    assert trie.allowed_mask(node, 1)[0].nonzero().flatten().tolist() == [21]
    assert trie.step(node, torch.tensor([20]), 1).item() == DEAD
    suffixes = torch.tensor([[vocab[c] for c in codes[item]] for item in ("z", "x", "y")] + [[10, 21, 30]])
    assert trie.items_of(trie.walk(suffixes)) == ["z", "x", "y", None]
    dead = torch.tensor([DEAD])
    assert not trie.allowed_mask(dead, 1).any()
    with pytest.raises(RuntimeError, match="exactly 3 tokens"):
        trie.children(root, 3)


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        ({"x": ["<a_0>", "<b_1>"], "y": ["<a_0>", "<b_1>"]}, "'x' and 'y' share the same SCID"),
        ({"x": ["<a_0>", "<b_1>"], "y": ["<a_0>"]}, "item 'y' has 1 codes; the others have 2"),
        ({"x": ["<a_0>", "<b_9>"]}, "'<b_9>' of item 'x' is not in the tokenizer"),
        ({}, "empty"),
    ],
)
def test_trie_rejects_bad_tables(codes, message):
    with pytest.raises(DataError, match=message):
        SCIDTrie.build(codes, {"<a_0>": 1, "<b_1>": 2}, vocab_size=8)


def test_tokenizer_without_code_tokens_is_named(loaded):
    model, tokenizer, _, _ = loaded
    with pytest.raises(DataError, match=r"lacks 1 code tokens.*'<zz_1>'"):
        trie_for_model({"x": ["<zz_1>"]}, tokenizer, model)


def test_beam_width_must_be_positive(loaded):
    model, tokenizer, trie, _ = loaded
    with pytest.raises(ConfigError, match="beam_size must be >= 1"):
        BeamSearchDecoder(model, trie, tokenizer.pad_token_id, beam_size=0)
    with pytest.raises(ConfigError, match="decoder must be one of"):
        build_decoder("sampling", model, tokenizer, trie, 20, 4)
    for name in ("generate", "unconstrained"):  # one beam is Transformers' greedy search: no sequence scores
        with pytest.raises(ConfigError, match=rf"decoder '{name}' needs beam_size >= 2.*'beam_search'"):
            build_decoder(name, model, tokenizer, trie, 1, 4)
    prompts = loaded[3][:3]
    for name in ("beam_search", "exhaustive"):  # the toolkit's own searches rank at width 1
        assert [len(r.items) for r in build_decoder(name, model, tokenizer, trie, 1, 4).recommend(prompts)] == [1] * 3


def test_three_decoders_agree(loaded):
    model, tokenizer, trie, prompts = loaded
    results = {
        name: build_decoder(name, model, tokenizer, trie, 20, 4).recommend(prompts)
        for name in ("beam_search", "generate", "exhaustive")
    }
    for beam, hf, exact in zip(results["beam_search"], results["generate"], results["exhaustive"], strict=True):
        assert beam.items == hf.items
        assert beam.scores == pytest.approx(hf.scores, abs=1e-4)
        assert len(beam.items) == len(set(beam.items)) == 20 == beam.valid == beam.returned
        assert set(beam.items) <= set(trie.leaf_items) and set(exact.items) <= set(trie.leaf_items)
        assert exact.scores[0] >= beam.scores[0] - 1e-4
        assert exact.scores == sorted(exact.scores, reverse=True)
        assert all(s <= 0 for s in beam.scores)


def test_trie_bans_subtrees_of_excluded_leaves_only():
    vocab = {f"<{p}_{i}>": 10 + 10 * j + i for j, p in enumerate("abc") for i in range(4)}
    codes = {"x": ["<a_0>", "<b_1>", "<c_2>"], "y": ["<a_0>", "<b_1>", "<c_3>"], "z": ["<a_2>", "<b_0>", "<c_0>"]}
    trie = SCIDTrie.build(codes, vocab, vocab_size=64)
    banned = trie.banned_leaves([["x", "y"], ["x", "not-an-item"], []])
    assert banned.tolist() == [[0, 1], [0, 3], [3, 3]]
    roots = torch.zeros(3, dtype=torch.long)
    allowed = trie.allowed_mask(roots, 0, banned)
    assert [row.nonzero().flatten().tolist() for row in allowed] == [[12], [10, 12], [10, 12]]
    a0_b1 = trie.step(trie.step(roots, torch.tensor([10] * 3), 0), torch.tensor([21] * 3), 1)
    allowed = trie.allowed_mask(a0_b1, 2, banned)
    assert [row.nonzero().flatten().tolist() for row in allowed] == [[], [33], [32, 33]]


def test_excluded_items_are_never_returned_and_the_beam_stays_full(loaded, histories, scid_model):
    """Exclusion is exact: each decoder ranks the other items as it would rank a catalogue without the excluded
    ones (the beam search equals a beam search over the trie of the remaining items), keeps `beam_size` of them,
    and an empty exclusion changes nothing."""
    model, tokenizer, trie, prompts = loaded
    items = json.loads((scid_model / "item_codes.json").read_text())
    beam = BeamSearchDecoder(model, trie, tokenizer.pad_token_id, 20, 3)
    excluded = beam.recommend(prompts, exclude=histories)
    assert beam.recommend(prompts, exclude=[[]] * len(prompts)) == beam.recommend(prompts)
    for prompt, history, ranked in zip(prompts, histories, excluded, strict=True):
        assert len(ranked.items) == len(set(ranked.items)) == 20 and not set(ranked.items) & set(history)
        rest = trie_for_model({i: c for i, c in items.items() if i not in history}, tokenizer, model)
        alone = BeamSearchDecoder(model, rest, tokenizer.pad_token_id, 20, 1).recommend([prompt])[0]
        assert ranked.items == alone.items
        assert ranked.scores == pytest.approx(alone.scores, rel=1e-6, abs=1e-5)  # sums in another order
    generated = build_decoder("generate", model, tokenizer, trie, 20, 3).recommend(prompts, exclude=histories)
    assert [r.items for r in generated] == [r.items for r in excluded]
    exhaustive = ExhaustiveDecoder(model, trie, tokenizer.pad_token_id, beam_size=len(trie))
    full = exhaustive.recommend(prompts[:2])
    exact = ExhaustiveDecoder(model, trie, tokenizer.pad_token_id, 20).recommend(prompts[:2], exclude=histories[:2])
    for everything, history, ranked in zip(full, histories[:2], exact, strict=True):
        assert ranked.items == [i for i in everything.items if i not in history][:20]
    free = build_decoder("unconstrained", model, tokenizer, trie, 5, 3).recommend(prompts[:3], exclude=histories[:3])
    assert all(not set(r.items) & set(h) for r, h in zip(free, histories, strict=False))
    few = trie.leaf_items[:2]
    rest = beam.recommend(prompts[:2], exclude=[[i for i in trie.leaf_items if i not in few]] * 2)
    assert [sorted(r.items) for r in rest] == [sorted(few)] * 2


@pytest.mark.parametrize("layout", ["tree", "expand"])
def test_beam_search_scores_are_exact_log_probabilities(loaded, layout):
    """Every beam score equals the exhaustive log-probability of that item; batching does not change results."""
    model, tokenizer, trie, prompts = loaded
    exhaustive = ExhaustiveDecoder(model, trie, tokenizer.pad_token_id)
    one_by_one = BeamSearchDecoder(model, trie, tokenizer.pad_token_id, 20, 1, layout).recommend(prompts)
    batched = BeamSearchDecoder(model, trie, tokenizer.pad_token_id, 20, 6, layout).recommend(prompts)
    for prompt, single, batch in zip(prompts, one_by_one, batched, strict=True):
        assert single.items == batch.items
        exact = exhaustive.item_log_probs(prompt)
        index = {item: i for i, item in enumerate(trie.leaf_items)}
        assert single.scores == pytest.approx([exact[index[i]].item() for i in single.items], abs=1e-4)
        assert exact.exp().sum().item() <= 1.0 + 1e-4


def test_tree_and_expanded_layouts_agree_under_sdpa_and_eager(loaded, scid_model):
    """The shared-prompt tree layout (a 4D mask over parallel beams) ranks exactly as one cache row per beam, with
    the boolean (sdpa) and the additive (eager) mask; layouts the attention cannot run are refused."""
    _, tokenizer, trie, prompts = loaded
    for implementation in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(scid_model, attn_implementation=implementation).eval()
        tree, expand = (
            BeamSearchDecoder(model, trie, tokenizer.pad_token_id, 20, 3, layout).recommend(prompts)
            for layout in ("tree", "expand")
        )
        assert BeamSearchDecoder(model, trie, tokenizer.pad_token_id).layout == "tree"
        for a, b in zip(tree, expand, strict=True):
            assert a.items == b.items
            assert a.scores == pytest.approx(b.scores, abs=1e-4)
    with pytest.raises(ConfigError, match="layout must be one of"):
        BeamSearchDecoder(model, trie, tokenizer.pad_token_id, layout="flat")


def test_a_sliding_window_model_decodes_with_one_cache_row_per_beam(loaded, scid_model):
    """A window shorter than the prompt and the beams decoded so far: the cache keeps the window's keys only, so the
    tree layout's mask over all of them cannot apply; `auto` takes the expanded layout, which ranks as the exhaustive
    scorer, and `tree` is refused."""
    _, tokenizer, trie, prompts = loaded
    config = AutoConfig.from_pretrained(scid_model)
    config.use_sliding_window, config.sliding_window = True, 16
    config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    model = AutoModelForCausalLM.from_pretrained(scid_model, config=config, attn_implementation="sdpa").eval()
    assert "sliding_attention" in model.config.layer_types and max(map(len, prompts[:3])) > 16
    decoder = BeamSearchDecoder(model, trie, tokenizer.pad_token_id, 20, 3)
    assert decoder.layout == "expand"
    exact = ExhaustiveDecoder(model, trie, tokenizer.pad_token_id)
    for prompt, ranked in zip(prompts[:3], decoder.recommend(prompts[:3]), strict=True):
        index = {item: i for i, item in enumerate(trie.leaf_items)}
        scores = exact.item_log_probs(prompt)
        assert ranked.scores == pytest.approx([scores[index[i]].item() for i in ranked.items], abs=1e-4)
    with pytest.raises(ConfigError, match="layout='tree' needs .* and no sliding window"):
        BeamSearchDecoder(model, trie, tokenizer.pad_token_id, layout="tree")


def test_small_catalogue_returns_every_item_exactly_ranked(loaded):
    """Fewer items than beams (and a root with one child): each decoder returns every item once, in exact order."""
    model, tokenizer, _, prompts = loaded
    codes = {"m1": ["<a_3>", "<b_0>", "<c_0>"], "m2": ["<a_3>", "<b_0>", "<c_1>"], "m3": ["<a_3>", "<b_5>", "<c_2>"]}
    trie = trie_for_model(codes, tokenizer, model)
    lists = [
        [r.items for r in build_decoder(name, model, tokenizer, trie, 20, 3).recommend(prompts[:3])]
        for name in ("beam_search", "generate", "exhaustive")
    ]
    assert lists[0] == lists[1] == lists[2]
    assert all(sorted(items) == ["m1", "m2", "m3"] for items in lists[0])


def test_unconstrained_generation_reports_validity(loaded, scid_model):
    """Each prompt's 5 beams, generated here by plain `model.generate` (same beam search, no constraint): the valid
    count is the number of them that are an item's whole code, and the items those codes name, best first and each
    once, are the ranking. The random SCID rows make the tiny model repeat one SCID token, so the catalogue also
    holds an item for each user-code token repeated three times: some beams are items, others are not."""
    from transformers import GenerationConfig

    model, tokenizer, _, prompts = loaded
    items = json.loads((scid_model / "item_codes.json").read_text())
    user_tokens = {t for code in json.loads((scid_model / "user_codes.json").read_text()).values() for t in code}
    items |= {f"echo {token}": [token] * 3 for token in sorted(user_tokens)}
    trie = trie_for_model(items, tokenizer, model)
    item_of = {tuple(tokenizer.convert_tokens_to_ids(code)): item for item, code in items.items()}
    settings = GenerationConfig(
        do_sample=False, num_beams=5, num_return_sequences=5, max_new_tokens=3, min_new_tokens=3, length_penalty=0.0,
        early_stopping="never", eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    decoder = build_decoder("unconstrained", model, tokenizer, trie, 5, 1)
    valid = 0
    for prompt in prompts:
        (result,) = decoder.recommend([prompt])
        with torch.no_grad():
            output = model.generate(input_ids=torch.tensor([prompt]), generation_config=settings)
        named = [item_of.get(tuple(row)) for row in output[:, len(prompt) :].tolist()]
        assert result.returned == 5 and result.valid == sum(item is not None for item in named)
        assert result.items == list(dict.fromkeys(item for item in named if item is not None))
        valid += result.valid
    assert 0 < valid < 5 * len(prompts)


def test_generation_config_file_cannot_change_the_ranking(loaded, scid_model, tmp_path):
    model, tokenizer, trie, prompts = loaded
    reference = GenerateDecoder(model, trie, tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    skewed_folder = tmp_path / "skewed"
    model.save_pretrained(skewed_folder)
    tokenizer.save_pretrained(skewed_folder)
    settings = {
        "do_sample": True,
        "temperature": 0.3,
        "top_k": 3,
        "top_p": 0.5,
        "repetition_penalty": 1.8,
        "length_penalty": 3.0,
        "no_repeat_ngram_size": 1,
        "num_beams": 2,
    }
    config = json.loads((skewed_folder / "generation_config.json").read_text())
    write_json(skewed_folder / "generation_config.json", {**config, **settings})
    skewed_model, _ = load_for_inference(skewed_folder)
    assert skewed_model.generation_config.do_sample is True
    skewed = GenerateDecoder(skewed_model, trie, tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    for a, b in zip(reference.recommend(prompts[:4]), skewed.recommend(prompts[:4]), strict=True):
        assert a.items == b.items
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
    assert skewed_model.generation_config.do_sample is True


def test_tied_scores_rank_in_a_fixed_order_whatever_the_beam_width(loaded):
    """A model whose head gives every token the same logit ties every item: each decoder lists them in candidate order
    (the trie's leaf order), so the list at a narrow beam is the prefix of the list at a wide one (`topk` orders equal
    values differently for different k)."""
    model, tokenizer, trie, prompts = loaded
    flat = copy.deepcopy(model)
    with torch.no_grad():
        flat.get_output_embeddings().weight.zero_()
    for name in ("beam_search", "exhaustive"):
        narrow, wide = (build_decoder(name, flat, tokenizer, trie, k, 2).recommend(prompts[:2]) for k in (5, 20))
        for short, long in zip(narrow, wide, strict=True):
            assert short.items == long.items[:5] == list(trie.leaf_items[:5])
            assert len(set(long.scores)) == 1
    scores = torch.tensor([[0.0, -1.0, 0.0, 0.0, -1.0, 0.0, 0.0]])
    assert best_first(scores, 3)[1].tolist() == [[0, 2, 3]]
    assert best_first(scores, 6)[1].tolist() == [[0, 2, 3, 5, 6, 1]]
