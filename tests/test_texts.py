"""Task texts: a profile per user, an intention per training target, a preference per user; training part only."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from align3gr.data.config import DataConfig
from align3gr.data.dataset import Dataset, load_dataset
from align3gr.data.schema import Item, Sequence, User
from align3gr.data.text_writer import LLMTextWriter
from align3gr.data.texts import TaskTexts, add_task_texts
from align3gr.models.tiny import build_tiny_causal_lm


def crafted_dataset() -> Dataset:
    """Two users whose valid and test targets carry unique, recognisable words in title, category and brand."""
    items = {
        f"i{k}": Item(f"i{k}", f"Plain Item {k}", "", ["Music", f"Kind{k % 3}"], {"brand": "Acme"}) for k in range(8)
    }
    items["valid"] = Item("valid", "Zanzibar Valid Thing", "", ["Music", "Quokkacore"], {"brand": "Veltro"})
    items["test"] = Item("test", "Xylophonic Test Thing", "", ["Music", "Yodelwave"], {"brand": "Tessaract"})
    sequences, users = {}, {}
    for u in ("u1", "u2"):
        ids = [f"i{k}" for k in range(8)] + ["valid", "test"]
        reviews = [f"solid sound solid build number {k}" for k in range(8)] + ["quokkacore zanzibar!", "yodelwave xylo"]
        ratings = [5, 4, 1, 1, 3, 5, 1, 2, 5, 1]
        sequences[u] = Sequence(u, ids, list(range(10)), ratings, reviews, None)
        users[u] = User(u, "", {})
    return Dataset(items=items, users=users, sequences=sequences)


def all_text(dataset: Dataset) -> str:
    parts = [u.profile for u in dataset.users.values()] + [r["query"] for r in dataset.intentions]
    return " ".join(parts + list(dataset.preferences.values())).lower()


def test_texts_use_the_training_part_only():
    dataset = crafted_dataset()
    add_task_texts(dataset, DataConfig())
    text = all_text(dataset)
    for secret in ("zanzibar", "quokkacore", "veltro", "xylophonic", "yodelwave", "tessaract", "xylo"):
        assert secret not in text
    assert {(r["user_id"], r["item_id"]) for r in dataset.intentions} == {
        (u, f"i{k}") for u in ("u1", "u2") for k in range(1, 8)
    }


def test_every_user_gets_a_profile_and_a_preference(ml100k):
    dataset = load_dataset(ml100k)
    assert all(user.profile.strip() for user in dataset.users.values())
    assert set(dataset.preferences) == set(dataset.sequences)
    assert len(dataset.intentions) == len(dataset.examples("train"))
    train_targets = {(e.user_id, e.target) for e in dataset.examples("train")}
    assert {(r["user_id"], r["item_id"]) for r in dataset.intentions} == train_targets
    for row in dataset.intentions[:500]:
        assert dataset.items[row["item_id"]].title.lower() not in row["query"].lower()


def test_profiles_summarise_reviews_and_preferences_follow_feedback():
    dataset = crafted_dataset()
    for seq in dataset.sequences.values():
        seq.feedback = ["liked" if r >= 4 else "disliked" if r <= 1 else "neutral" for r in seq.ratings]
    add_task_texts(dataset, DataConfig())
    assert "solid" in dataset.users["u1"].profile and "sound" in dataset.users["u1"].profile
    assert "average rating" in dataset.users["u1"].profile
    preference = dataset.preferences["u1"]
    assert "Plain Item 5" in preference  # the most recent liked training item
    assert "Music" not in preference  # a category every item has says nothing


def test_same_seed_same_texts_other_seed_other_paraphrases():
    first, second, other = crafted_dataset(), crafted_dataset(), crafted_dataset()
    add_task_texts(first, DataConfig(seed=3))
    add_task_texts(second, DataConfig(seed=3))
    add_task_texts(other, DataConfig(seed=4))
    assert first.intentions == second.intentions and first.preferences == second.preferences
    assert [u.profile for u in first.users.values()] == [u.profile for u in second.users.values()]
    assert first.intentions != other.intentions


def teach_to_answer(folder, prompts: list[str], answer: str, steps: int = 80) -> None:
    """Fine-tune the tiny LM for a few steps to answer these prompts with `answer`, so its output is known."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer.padding_side = "left"  # as the writer generates
    texts = [LLMTextWriter.render(tokenizer, p) + answer + tokenizer.eos_token for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    model.save_pretrained(folder)


def test_llm_writer_generates_offline_and_reuses_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dataset = crafted_dataset()
    model = build_tiny_causal_lm([all_text(dataset), "cozy jazz records"], tmp_path / "lm", vocab_size=300)
    config = DataConfig(text_generator="llm", text_model=str(model), text_cache=str(tmp_path / "cache"))
    config.text_max_new_tokens = 8
    writer = LLMTextWriter(config)
    texts = TaskTexts(dataset, config)
    requests = [*texts.user_requests(), *texts.intention_requests()]
    teach_to_answer(model, [writer.prompt(r) for r in requests], "cozy jazz records")
    add_task_texts(dataset, config)
    cache_files = list((tmp_path / "cache").glob("*.jsonl"))
    assert len(cache_files) == 1
    records = [json.loads(line) for line in cache_files[0].read_text().splitlines()]
    assert len(records) == 1 + 7 + 1  # both users have the same facts: one profile, 7 intentions, one preference
    assert all("jazz" in r["text"] for r in records)
    assert all("jazz" in r["query"] for r in dataset.intentions)
    assert all("jazz" in dataset.preferences[u] and "jazz" in dataset.users[u].profile for u in ("u1", "u2"))
    first = (dict(dataset.preferences), list(dataset.intentions))

    again = crafted_dataset()
    add_task_texts(again, config)  # everything is cached: nothing new is generated or appended
    assert (dict(again.preferences), list(again.intentions)) == first
    assert len(cache_files[0].read_text().splitlines()) == len(records)


def test_llm_generator_needs_a_model_folder(tmp_path):
    with pytest.raises(Exception, match="text_model"):
        DataConfig(text_generator="llm").validate()
    with pytest.raises(Exception, match="expected a local model folder"):
        add_task_texts(crafted_dataset(), DataConfig(text_generator="llm", text_model=str(tmp_path)))
