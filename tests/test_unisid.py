"""UniSID on a tiny Qwen2.5-VL built from a config, vision tower included: the input schema with and
without images, the token positions the heads read, each loss against a hand computation, what trains and what
stays frozen, the V-measure, and the stage on a small catalogue with images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from align3gr.data.dataset import Dataset, load_dataset, write_dataset
from align3gr.data.schema import Item, Sequence, User
from align3gr.errors import ConfigError, DataError
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.models.tiny_vl import build_tiny_qwen2_5_vl
from align3gr.scid.code_tables import load_code_tables
from align3gr.scid.tokens import code_tokens
from align3gr.scid.vocabulary import extend_vocabulary
from align3gr.tokenize.codebook_stats import level_v_measure, v_measure
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.stage import item_report, run_tokenize
from align3gr.tokenize.unisid.backbone import build_tiny_models, load_backbone, load_reconstructor, make_trainable
from align3gr.tokenize.unisid.config import UniSIDConfig
from align3gr.tokenize.unisid.losses import (
    embedding_contrastive,
    multi_granularity_loss,
    summary_reconstruction_loss,
    total_loss,
    unisid_losses,
)
from align3gr.tokenize.unisid.model import UniSID, encode_views, language_backbone, load_unisid, token_positions
from align3gr.tokenize.unisid.schema import ItemSchema, first_view, item_inputs, second_view, sid_tokens
from align3gr.tokenize.unisid.summaries import load_unisid_prompts, summary_request, write_summaries
from align3gr.tokenize.unisid.train import granularity_labels

CATALOGUE = [
    ("1", "Red kettle", "A red steel kettle for the stove top", ["Kitchen", "Cookware", "Kettles"], (60, 40)),
    ("2", "Blue kettle", "A blue enamel kettle that whistles", ["Kitchen", "Cookware", "Kettles"], (30, 90)),
    ("3", "Chef knife", "A sharp chef knife for vegetables", ["Kitchen", "Cutlery", "Knives"], None),
    ("4", "Bread knife", "A serrated bread knife", ["Kitchen", "Cutlery", "Knives"], (56, 56)),
    ("5", "Desk lamp", "A small desk lamp with a warm light", ["Home", "Lighting"], None),
    ("6", "Floor lamp", "A tall floor lamp for reading", ["Home", "Lighting"], (40, 70)),
    ("7", "Gift card", "A gift card for any shop", [], None),
]
TINY = {"tiny_vocab_size": 400, "tiny_hidden_size": 32, "tiny_layers": 2, "epochs": 2, "batch_size": 4}


def make_image(path, size, seed):
    """A deterministic RGB gradient with noise, `size` (width, height)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A canonical dataset of 7 items (4 with images, one without categories) and 3 users."""
    folder = tmp_path_factory.mktemp("unisid_catalogue") / "data"
    folder.mkdir()
    items = {}
    for index, (item_id, title, description, categories, size) in enumerate(CATALOGUE):
        attributes: dict = {"brand": "Acme", "price": 10.0 + index}
        if size is not None:
            make_image(folder / "images" / f"{item_id}.png", size, index)
            attributes["image"] = f"images/{item_id}.png"
        items[item_id] = Item(item_id, title, description, categories, attributes)
    orders = {"u1": ["1", "2", "3", "4"], "u2": ["5", "6", "7", "1"], "u3": ["3", "4", "5", "6", "2"]}
    sequences = {u: Sequence(u, ids, list(range(len(ids)))) for u, ids in orders.items()}
    users = {u: User(u, f"user {u}") for u in orders}
    write_dataset(Dataset(items, users, sequences, meta={"builder": "test"}), folder)
    return folder


@pytest.fixture(scope="module")
def tiny_vl(catalogue, tmp_path_factory):
    """A tiny Qwen2.5-VL saved to a folder with its tokenizer and image processor."""
    dataset = load_dataset(catalogue)
    texts = [f"{i.title} {i.description} {' '.join(i.categories)}" for i in dataset.items.values()] * 4
    texts += load_unisid_prompts()["instruction"] + ["Title: Description: Category: Brand: Price:"]
    return build_tiny_qwen2_5_vl(texts, tmp_path_factory.mktemp("tiny_vl") / "model", vocab_size=400, hidden_size=32)


@pytest.fixture(scope="module")
def parts(catalogue, tiny_vl):
    """(backbone with the SID tokens, their IDs, the schema, the items' inputs) of the tiny model, L = 3."""
    torch.manual_seed(0)
    backbone, tokenizer, image_processor = load_backbone(str(tiny_vl), "float32")
    token_ids = extend_vocabulary(backbone, tokenizer, sid_tokens(3))
    instruction = load_unisid_prompts()["instruction"][0]
    schema = ItemSchema(tokenizer, image_processor, backbone.config, instruction, 3)
    items = item_inputs(load_dataset(catalogue), "image", 128)
    return backbone, token_ids, schema, items


def test_tiny_qwen2_5_vl_loads_like_a_checkpoint_and_other_models_are_refused(tiny_vl, tmp_path):
    backbone, tokenizer, image_processor = load_backbone(str(tiny_vl), "float32")
    assert type(backbone).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert len(backbone.model.visual.blocks) == 1 and image_processor.merge_size == 2
    assert tokenizer.convert_ids_to_tokens(backbone.config.image_token_id) == "<|image_pad|>"
    qwen2 = build_tiny_causal_lm(["some text to train on"] * 10, tmp_path / "qwen2", vocab_size=300, hidden_size=32)
    with pytest.raises(ConfigError, match="is a 'qwen2' model; UniSID needs a Qwen2.5-VL checkpoint"):
        load_backbone(str(qwen2), "float32")
    with pytest.raises(ConfigError, match="cannot load a model config"):
        load_backbone(str(tmp_path / "missing"), "float32")


def test_schema_fills_image_placeholders_and_ends_with_the_sid_and_embedding_tokens(parts):
    backbone, token_ids, schema, items = parts
    with_image, without = items[0], items[2]
    batch = schema([first_view(with_image), first_view(without)])
    grid = batch["image_grid_thw"]
    assert grid.shape == (1, 3) and batch["pixel_values"].shape[0] == int(grid.prod())
    image_tokens = batch["input_ids"] == backbone.config.image_token_id
    assert image_tokens[0].sum() == int(grid.prod()) // 4 and image_tokens[1].sum() == 0
    assert torch.equal(batch["mm_token_type_ids"].bool(), image_tokens)
    for row, length in enumerate(batch["attention_mask"].sum(1).tolist()):
        assert batch["input_ids"][row, length - 4 : length].tolist() == token_ids
    text = schema.text(first_view(without), 0)
    assert "Category: Kitchen > Cutlery > Knives\nBrand: Acme\nPrice: 12.0\n" in text and "image" not in text
    view = second_view(with_image, np.random.default_rng(3), 0.5)
    assert view.mirrored and set(view.words) < set(with_image.words)
    assert view == second_view(with_image, np.random.default_rng(3), 0.5)


def test_heads_read_the_hidden_states_at_the_sid_and_embedding_tokens(parts):
    backbone, token_ids, schema, items = parts
    model = UniSID(backbone, token_ids, codebook_size=8, embedding_dim=6)
    batch = schema([first_view(items[0]), first_view(items[2]), second_view(items[5], np.random.default_rng(0), 0.3)])
    with torch.no_grad():
        output = model(batch)
        states = language_backbone(backbone)(**batch).last_hidden_state
    lengths = batch["attention_mask"].sum(1)
    expected = lengths.unsqueeze(1) - 4 + torch.arange(4)  # right padding: the last 4 real tokens
    assert torch.equal(token_positions(batch["input_ids"], model.token_ids), expected)
    assert torch.allclose(output.hidden, states[torch.arange(3).unsqueeze(1), expected])
    assert torch.allclose(output.sid_logits[:, 1], model.sid_head.levels[1](states[torch.arange(3), expected[:, 1]]))
    assert torch.allclose(output.embedding, model.embedding_head(states[torch.arange(3), expected[:, 3]]))
    assert output.sid_logits.shape == (3, 3, 8) and output.embedding.shape == (3, 6)
    with pytest.raises(ValueError, match="expected once"):
        token_positions(batch["input_ids"][:, :-1], model.token_ids)


def hand_supervised_contrastive(z, labels, tau, negatives_only=False):
    """-1/|P| sum_p log(exp(cos(i,p)/tau) / sum_a exp(cos(i,a)/tau)), averaged over anchors with positives; a runs
    over all other rows (Eq. 5) or, with `negatives_only`, over the rows with another label (Eq. 6)."""
    rows = [[float(x) for x in row] for row in z]

    def cos(a, b):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    losses = []
    for i, anchor in enumerate(rows):
        positives = [p for p in range(len(rows)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        candidates = [a for a in range(len(rows)) if a != i and not (negatives_only and labels[a] == labels[i])]
        denominator = sum(math.exp(cos(anchor, rows[a]) / tau) for a in candidates)
        terms = [math.log(math.exp(cos(anchor, rows[p]) / tau) / denominator) for p in positives]
        losses.append(-sum(terms) / len(positives))
    return sum(losses) / len(losses)


def test_multi_granularity_and_embedding_losses_equal_a_hand_computation():
    # two views each of items 0, 1, 2; items 0 and 1 share the coarse category, item 2 does not
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2, 5, generator=generator)
    labels = torch.tensor([[0, 0], [0, 1], [1, 2], [0, 0], [0, 1], [1, 2]])
    tau = 0.5
    expected = sum(hand_supervised_contrastive(logits[:, level], labels[:, level].tolist(), tau) for level in (0, 1))
    assert multi_granularity_loss(logits, labels, tau).item() == pytest.approx(expected / 2, rel=1e-5)
    embedding = torch.randn(6, 4, generator=generator)
    items = torch.tensor([0, 1, 2, 0, 1, 2])
    assert embedding_contrastive(embedding, items, tau).item() == pytest.approx(
        hand_supervised_contrastive(embedding, items.tolist(), tau, negatives_only=True), rel=1e-5
    )
    # the deepest level: only the other view is a positive; a coarse level: the other item of the category too
    z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [1.0, 0.1], [0.7, 0.7], [0.1, 1.0]])
    only_view = hand_supervised_contrastive(z, [0, 1, 2, 0, 1, 2], 1.0)
    coarse = hand_supervised_contrastive(z, [0, 0, 1, 0, 0, 1], 1.0)
    assert multi_granularity_loss(torch.stack([z, z], 1), torch.tensor([[0, 0], [0, 1], [1, 2]] * 2), 1.0).item() == (
        pytest.approx((only_view + coarse) / 2, rel=1e-5)
    )
    # Eq. 5 keeps the positive in the denominator: row 0's other view at cos 1, the other item's rows at cos 0
    views = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    two_items = torch.tensor([0, 0, 1, 1])
    eq5 = multi_granularity_loss(views.unsqueeze(1), two_items.unsqueeze(1), 1.0)
    assert eq5.item() == pytest.approx(-math.log(math.e / (math.e + 2)), rel=1e-6)
    losses = {"sid": torch.tensor(1.5), "emb": torch.tensor(2.0), "rec": torch.tensor(3.0)}
    assert total_loss(losses, 0.1).item() == pytest.approx(1.5 + 2.0 + 0.3)
    assert total_loss({"sid": torch.tensor(1.5), "emb": torch.tensor(2.0)}, 0.0).item() == pytest.approx(3.5)


def test_embedding_loss_sums_its_denominator_over_the_negatives_only():
    # UniSID Eq. 6: -log(exp(cos(i, j)/tau) / sum_{k in N_i} exp(cos(i, k)/tau)); with the other view at cos 1 and
    # both rows of the other item at cos 0 (tau = 1): -log(e / 2) = log 2 - 1 for every row
    views = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    assert embedding_contrastive(views, torch.tensor([0, 0, 1, 1]), 1.0).item() == pytest.approx(math.log(2) - 1)
    # halving tau: -(1/0.5) + log(2 exp(0)) = log 2 - 2
    assert embedding_contrastive(views, torch.tensor([0, 0, 1, 1]), 0.5).item() == pytest.approx(math.log(2) - 2)
    # a process's share of one item has no negatives: no anchor, a zero loss that still back-propagates
    alone = torch.tensor([[1.0, 0.5], [0.3, 1.0]], requires_grad=True)
    loss = embedding_contrastive(alone, torch.tensor([4, 4]), 0.1)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(alone.grad, torch.zeros(2, 2))


def test_summary_reconstruction_loss_equals_a_hand_computation(tmp_path):
    folder = build_tiny_causal_lm(["a summary of a kettle", "a lamp"] * 20, tmp_path / "lm", 300, 32, 1)
    reconstructor, _ = load_reconstructor(str(folder), "float32")
    prefix = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[5, 9, 12, 7], [30, 4, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    terms = []
    with torch.no_grad():
        for row in range(2):
            length = int(mask[row].sum())
            embedded = reconstructor.get_input_embeddings()(ids[row, :length])
            inputs = torch.cat([prefix[row : row + 1], embedded]).unsqueeze(0)
            log_probs = torch.log_softmax(reconstructor(inputs_embeds=inputs).logits[0], -1)
            terms += [-float(log_probs[t, ids[row, t]]) for t in range(length)]  # position t predicts token t
        loss = summary_reconstruction_loss(reconstructor, prefix, ids, mask)
    # UniSID Eq. 10 sums over the summary's tokens (4 and 2 here); the batch's two summaries are averaged
    assert len(terms) == 6 and loss.item() == pytest.approx(sum(terms) / 2, rel=1e-5)


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_a_training_step_with_and_without_an_image_trains_only_what_it_should(catalogue, tiny_vl, tmp_path, use_lora):
    options = UniSIDConfig(use_lora=use_lora, lora_r=2)
    torch.manual_seed(0)
    backbone, tokenizer, image_processor = load_backbone(str(tiny_vl), "float32")
    token_ids = extend_vocabulary(backbone, tokenizer, sid_tokens(3))
    folder = build_tiny_causal_lm(["Red kettle: Kitchen", "Desk lamp: Home"] * 20, tmp_path / "lm", 300, 32, 1)
    reconstructor, summary_tokenizer = load_reconstructor(str(folder), "float32")
    vision = {k: v.clone() for k, v in backbone.model.visual.state_dict().items()}
    frozen_lm = {k: v.clone() for k, v in reconstructor.state_dict().items()}
    rows_before = backbone.get_input_embeddings().weight[token_ids].clone()
    backbone = make_trainable(backbone, token_ids, options)
    model = UniSID(backbone, token_ids, 8, 6, reconstructor)
    schema = ItemSchema(tokenizer, image_processor, backbone.config, "Make SIDs.", 3)
    items = item_inputs(load_dataset(catalogue), "image", 128)
    chosen = [items[0], items[2]]  # the first has an image, the second none
    views = [first_view(i) for i in chosen] + [second_view(i, np.random.default_rng(0), 0.3) for i in chosen]
    texts = ["Red kettle: Kitchen", "Desk lamp: Home"] * 2
    summary = summary_tokenizer(texts, padding=True, return_tensors="pt")
    output = model(schema(views), summary["input_ids"], summary["attention_mask"])
    losses = unisid_losses(output, torch.tensor([[0, 0, 0], [0, 1, 1]] * 2), torch.tensor([0, 1, 0, 1]), 0.1)
    assert set(losses) == {"sid", "emb", "rec"} and losses["rec"] is output.reconstruction_loss
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    total_loss(losses, 0.1).backward()
    named = dict(model.named_parameters())
    assert all(p.grad is None for n, p in named.items() if ".visual." in n or n.startswith("reconstructor."))
    assert all(not p.requires_grad for n, p in named.items() if ".visual." in n or n.startswith("reconstructor."))
    trained = [n for n, p in named.items() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(n.startswith("sid_head.") for n in trained) and any(n.startswith("embedding_head.") for n in trained)
    assert any(n.startswith("reconstruction_head.") for n in trained)
    assert any(".language_model.layers.1." in n for n in trained)
    if use_lora:
        assert all("lora_" in n or "trainable_tokens" in n or "_head." in n for n in trained)
    optimizer.step()
    visual = (backbone.get_base_model() if use_lora else backbone).model.visual.state_dict()
    assert all(torch.equal(v, visual[k]) for k, v in vision.items())
    assert all(torch.equal(v, reconstructor.state_dict()[k]) for k, v in frozen_lm.items())
    merged = backbone.merge_and_unload() if use_lora else backbone
    assert not torch.equal(merged.get_input_embeddings().weight[token_ids], rows_before)


def test_granularity_labels_follow_the_category_depth(catalogue):
    labels = granularity_labels(load_dataset(catalogue), 3)
    coarse, middle, deepest = labels[:, 0].tolist(), labels[:, 1].tolist(), labels[:, 2].tolist()
    assert coarse[0] == coarse[1] == coarse[2] == coarse[3] != coarse[4] == coarse[5]
    assert middle[0] == middle[1] != middle[2] == middle[3] and middle[4] == middle[5]
    # the deepest level: the depth-3 category (Kettles, Knives); the lamps have none, so each only itself
    assert deepest[0] == deepest[1] != deepest[2] == deepest[3] and len(set(deepest[3:])) == 4
    assert coarse[6] not in coarse[:6] and middle[6] not in middle[:6]  # no category: alone
    baseline = granularity_labels(load_dataset(catalogue), 3, by_category=False)
    assert all(len(set(baseline[:, level])) == 7 for level in range(3))  # InfoNCE: only the other view


def amazon_catalogue() -> Dataset:
    """12 items under Amazon's root category (on every item, as in the Amazon builder's output): 4 guitars (2
    electric, both solid-body, and 2 acoustic), 4 keyboards (2 digital pianos, 2 synthesizers), 3 drums and a bare
    accessory with the root only."""
    paths = [["Guitars", "Electric Guitars", "Solid Body"]] * 2 + [["Guitars", "Acoustic Guitars"]] * 2
    paths += [["Keyboards", "Digital Pianos"]] * 2 + [["Keyboards", "Synthesizers"]] * 2 + [["Drums"]] * 3 + [[]]
    items = {
        str(i): Item(str(i), f"Product {i}", "", ["Musical Instruments", *path], {"brand": "Fender"})
        for i, path in enumerate(paths)
    }
    return Dataset(items, {}, {})


def test_granularity_labels_drop_a_near_universal_root_and_fall_back_to_the_item():
    labels = granularity_labels(amazon_catalogue(), 3)
    first, second, third = (labels[:, level].tolist() for level in range(3))
    # level 1: the category below the root (the root on all 12 items would make every row a positive)
    assert len(set(first[:11])) == 3 and first[0] == first[3] != first[4] == first[7] != first[8] == first[10]
    assert first[11] not in first[:11]  # the root only: no informative category, alone
    assert second[0] == second[1] != second[2] == second[3] != second[4] == second[5] != second[6] == second[7]
    assert len(set(second[8:])) == 4  # drums have no depth-2 category: each only itself
    # level 3: the solid-body guitars share their depth-3 category, every other item is alone
    assert third[0] == third[1] and len(set(third[1:])) == 11


def test_unisid_level_1_codes_spread_over_an_amazon_catalogue(tmp_path):
    """Trained on a catalogue whose every item carries the root category, level 1 uses several codes: its labels
    come from the category below the root. With the root as level 1's label (every pair a positive), the same
    training gives one level-1 code for all 12 items."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_dataset(amazon_catalogue(), folder)
    config = TokenizeConfig(
        item_tokenizer="unisid", dual=False, u2i=False, codebook_size=4, unisid_options=TINY | {"epochs": 6}
    )
    report = run_tokenize(folder, None, tmp_path / "scid", config)
    level_1 = report["items"]["levels"][0]
    assert level_1["utilisation"] * config.codebook_size > 1  # raw codes, before collision resolution
    assert report["items"]["v_measure"][0]["v_measure"] > 0


def test_v_measure():
    perfect = v_measure(np.array(["a", "a", "b"]), np.array([[3], [3], [7]]))
    assert perfect == {"homogeneity": 1.0, "completeness": 1.0, "v_measure": 1.0}
    # classes a, a, b, b in clusters 0, 1, 1, 1: H(C) = log 2, H(C|K) = 3/4 * H(1/3, 2/3)
    split = v_measure(np.array(["a", "a", "b", "b"]), np.array([[0], [1], [1], [1]]))
    h_c_given_k = 0.75 * -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    h_k = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    h_k_given_c = 0.5 * math.log(2)
    homogeneity, completeness = 1 - h_c_given_k / math.log(2), 1 - h_k_given_c / h_k
    assert split["homogeneity"] == pytest.approx(homogeneity)
    assert split["completeness"] == pytest.approx(completeness)
    assert split["v_measure"] == pytest.approx(2 * homogeneity * completeness / (homogeneity + completeness))
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels, clusters = rng.integers(0, 6, 300).astype(str), rng.integers(0, 9, (300, 1))
    expected = sklearn.homogeneity_completeness_v_measure(labels, clusters[:, 0])
    assert tuple(v_measure(labels, clusters).values()) == pytest.approx(expected)
    per_level = level_v_measure(np.array([[0, 0], [0, 1], [1, 0]]), ["x", "y", "z"])
    assert [row["homogeneity"] for row in per_level] == pytest.approx([1 - math.log(2) / 3 / math.log(3) * 2, 1.0])


def test_summaries_from_the_template_or_a_local_llm(catalogue, tmp_path):
    dataset = load_dataset(catalogue)
    templates = write_summaries(dataset, UniSIDConfig(), seed=0)
    # UniSID Eq. 7 summarises the attributes: no title in the template's text nor in the LLM's facts
    assert templates[0] == "Kitchen, Cookware and Kettles by Acme under $10."
    assert templates[6] == "An item by Acme under $20."
    request = summary_request(dataset.items["1"], load_unisid_prompts()["summary"], 0, "image")
    assert request.facts == {"category": "Kitchen > Cookware > Kettles", "brand": "Acme", "price": "10.0"}
    llm = build_tiny_causal_lm(["a kettle for tea", "a lamp for reading"] * 20, tmp_path / "llm", 300, 32, 1)
    options = UniSIDConfig(summary_model=str(llm), summary_cache=str(tmp_path / "cache"), summary_max_new_tokens=8)
    written = write_summaries(dataset, options, seed=0)
    cached = [json.loads(line) for line in next((tmp_path / "cache").glob("*.jsonl")).read_text().splitlines()]
    assert len(written) == 7 and len(cached) == 7  # one generation per item, cached for the next run
    generated = {row["text"] for row in cached}
    assert all(text in generated or text == template for text, template in zip(written, templates, strict=True))
    with pytest.raises(ConfigError, match="unisid_options.summary_model='nowhere': expected a local model folder"):
        write_summaries(dataset, UniSIDConfig(summary_model="nowhere"), seed=0)


def test_a_tiny_reconstruction_lm_is_built_with_a_warning(tmp_path, caplog):
    options = UniSIDConfig(model="a-checkpoint", tiny_vocab_size=300, tiny_hidden_size=32, tiny_layers=1)
    texts = ["a kettle for tea", "a lamp for reading"] * 10
    build_tiny_models(options, texts, "unused", str(tmp_path / "lm"), seed=0)
    assert (tmp_path / "lm" / "config.json").is_file()
    assert "reconstruction_weight=0.1 with reconstruction_model=tiny, a random frozen LM" in caplog.text
    caplog.clear()
    build_tiny_models(options, texts, "unused", None, seed=0)  # lambda = 0: no reconstruction LM, no warning
    assert "reconstruction_weight" not in caplog.text


def test_bad_options_and_images_are_named(catalogue, tmp_path):
    with pytest.raises(ConfigError, match="item_tokenizer='rqkmeans': expected one of dual, unisid"):
        TokenizeConfig(item_tokenizer="rqkmeans").validate()
    with pytest.raises(ConfigError, match="UniSIDConfig has no option 'epoch'"):
        TokenizeConfig(unisid_options={"epoch": 3}).validate()
    with pytest.raises(ConfigError, match="unisid_options.view_dropout=1.0"):
        TokenizeConfig(unisid_options={"view_dropout": 1.0}).validate()
    with pytest.raises(ConfigError, match="give embeddings_dir"):
        run_tokenize(catalogue, None, tmp_path / "scid", TokenizeConfig(item_tokenizer="unisid", codebook_size=4))
    dataset = load_dataset(catalogue)
    dataset.items["3"].attributes["image"] = "https://example.com/knife.png"
    with pytest.raises(DataError, match=r"items.jsonl: item '3': attribute 'image' must be a local image file path"):
        item_inputs(dataset, "image", 10)
    dataset.items["3"].attributes["image"] = "images/missing.png"
    with pytest.raises(DataError, match=r"item '3': attribute 'image': .*missing.png is not a readable image"):
        item_inputs(dataset, "image", 10)
    for option, value in (("warmup_ratio", 5.0), ("learning_rate", -1.0), ("temperature", math.nan)):
        with pytest.raises(ConfigError, match=f"unisid_options.{option}="):
            TokenizeConfig(unisid_options={option: value}).validate()


def test_images_that_decode_badly_or_the_processor_refuses_are_named_before_training(catalogue, tmp_path):
    """A JPEG cut short passes PIL's `verify` and fails when decoded; a 2x3000 image exceeds the processor's 200:1."""
    from PIL import Image

    dataset = load_dataset(catalogue)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (2, 3000)).save(tmp_path / "thin.png")
    for name, message in (("cut.jpg", "is not a readable image"), ("thin.png", "is 2x3000; the vision processor")):
        dataset.items["3"].attributes["image"] = str(tmp_path / name)
        with pytest.raises(DataError, match=rf"item '3': attribute 'image': .*{message}"):
            item_inputs(dataset, "image", 10)


def test_stage_on_a_catalogue_with_images_writes_unique_reproducible_codes(catalogue, tmp_path):
    config = TokenizeConfig(item_tokenizer="unisid", dual=False, u2i=False, codebook_size=4, unisid_options=TINY)
    report = run_tokenize(catalogue, None, tmp_path / "scid", config)
    dataset = load_dataset(catalogue)
    items, users = load_code_tables(tmp_path / "scid", dataset)  # what the SFT stage reads
    assert users == {} and all(len(codes) >= 3 for codes in items.values())
    assert report["items"]["collisions"]["collision_rate_after"] == 0.0
    assert [row["level"] for row in report["items"]["v_measure"]] == list(range(len(next(iter(items.values())))))
    assert len(report["unisid"]["history"]) == 2 and report["unisid"]["steps"] == 4
    assert set(report["unisid"]["history"][0]) == {"epoch", "loss", "sid", "emb", "rec"}
    assert "dual_items" not in report and not (tmp_path / "scid.work").exists()
    # the saved model gives back the codes: the same raw SIDs resolve to the same table
    model, schema, document = load_unisid(tmp_path / "scid" / "unisid")
    logits, embeddings = encode_views(model, schema, [first_view(i) for i in item_inputs(dataset, "image", 128)], 3)
    assert embeddings.shape == (7, UniSIDConfig().embedding_dim) and document["codebook_size"] == 4
    costs = -torch.log_softmax(torch.from_numpy(logits[:, -1]), -1).numpy()
    labels = [" > ".join(i.categories) for i in dataset.items.values()]
    codes, _ = item_report(logits.argmax(-1), costs, 4, labels)
    assert dict(zip(dataset.items, code_tokens(codes, "item"), strict=True)) == items
    run_tokenize(catalogue, None, tmp_path / "again", config)
    assert (tmp_path / "scid" / "item_codes.json").read_bytes() == (tmp_path / "again" / "item_codes.json").read_bytes()
    assert json.loads((tmp_path / "again" / "report.json").read_text())["item_tokenizer"] == "unisid"
