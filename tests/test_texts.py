"""Task texts: a profile per user, an intention per training target, a preference per user; training part only."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from align3gr.config import fingerprint_options
from align3gr.data.build import build_dataset
from align3gr.data.config import DataConfig
from align3gr.data.dataset import Dataset, load_dataset
from align3gr.data.schema import Item, Sequence, User
from align3gr.data.text_writer import Instructions, LLMTextWriter
from align3gr.data.texts import TEMPLATE_KINDS, TaskTexts, add_task_texts
from align3gr.errors import ConfigError, DataError
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.prompts import load_prompts
from align3gr.tokenize.config import TokenizeConfig


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
        reviews = [f"solid sound solid build number {k + 10}" for k in range(8)]  # not the titles' numbers
        reviews += ["quokkacore zanzibar!", "yodelwave xylo"]
        ratings = [5, 4, 1, 1, 3, 5, 1, 2, 5, 1]
        sequences[u] = Sequence(u, ids, list(range(10)), ratings, reviews, None)
        users[u] = User(u, "", {})
    return Dataset(items=items, users=users, sequences=sequences)


def all_text(dataset: Dataset) -> str:
    parts = [u.profile for u in dataset.users.values()] + [r["query"] for r in dataset.intentions]
    return " ".join(parts + list(dataset.preferences.values())).lower()


def test_texts_use_the_training_part_only():
    dataset = crafted_dataset()
    dataset.sequences["u1"].reviews[3] = "Plain Item 3 has a warm tone"
    add_task_texts(dataset, DataConfig())
    text = all_text(dataset)
    for secret in ("zanzibar", "quokkacore", "veltro", "xylophonic", "yodelwave", "tessaract", "xylo"):
        assert secret not in text
    assert [(r["user_id"], r["item_id"]) for r in dataset.intentions] == [
        (u, f"i{k}") for u in ("u1", "u2") for k in range(1, 8)
    ]
    query = dataset.intentions[2]["query"]  # u1 -> i3: the user's words about it, without its title
    assert "has a warm tone" in query and "plain" not in query.lower() and "Kind0" in query and "Acme" in query


def test_every_user_gets_a_profile_and_a_preference(ml100k):
    dataset = load_dataset(ml100k)
    assert all(user.profile.strip() for user in dataset.users.values())
    assert set(dataset.preferences) == set(dataset.sequences)
    assert len(dataset.intentions) == len(dataset.examples("train"))
    train_targets = {(e.user_id, e.target) for e in dataset.examples("train")}
    assert {(r["user_id"], r["item_id"]) for r in dataset.intentions} == train_targets
    for row in dataset.intentions:  # no title in its query (as a whole word: 'M' may be the m of "I'm")
        title = dataset.items[row["item_id"]].title
        assert not re.search(rf"\b{re.escape(title)}\b", row["query"], re.IGNORECASE) or len(title) < 3
    assert dataset.users["1"].profile.startswith("A 24-year-old male technician. ")  # the builder's sentence kept


def test_loaded_intentions_are_read_from_their_file_on_every_pass(ml100k, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(ml100k, folder)
    lines = (folder / "intentions.jsonl").read_text().splitlines()
    dataset = load_dataset(folder)
    assert list(dataset.intentions) == list(dataset.intentions) == [json.loads(line) for line in lines]
    assert len(dataset.intentions) == dataset.meta["counts"]["intentions"] == len(lines)
    (folder / "intentions.jsonl").write_text("\n".join(lines[:3]) + "\n")  # not held: the next pass reads the file
    with pytest.raises(DataError, match="intentions.jsonl: the file changed after its dataset was loaded"):
        next(iter(dataset.intentions))
    assert [row["query"] for row in load_dataset(folder).intentions] == [json.loads(ln)["query"] for ln in lines[:3]]
    abandoned = load_dataset(folder).intentions
    next(iter(abandoned))
    assert len(abandoned) == 3  # a pass left early counts nothing


def test_intentions_per_user_writes_a_seeded_sample_of_each_users_targets(ml100k, tmp_path):
    every = {(r["user_id"], r["item_id"]): r["query"] for r in load_dataset(ml100k).intentions}
    capped = tmp_path / "capped"
    build_dataset("movielens", "recbole", capped, DataConfig(intentions_per_user=3))
    dataset = load_dataset(capped)
    rows = list(dataset.intentions)
    assert dataset.meta["counts"]["intentions"] == len(rows) == 3 * len(dataset.sequences)  # every user rated 20+ films
    for user_id, seq in dataset.sequences.items():
        items = [r["item_id"] for r in rows if r["user_id"] == user_id]
        positions = [seq.items.index(item) for item in items]
        assert positions == sorted(set(positions)) and all(1 <= p < len(seq.items) - 2 for p in positions)
    assert all(every[r["user_id"], r["item_id"]] == r["query"] for r in rows)  # the texts the full build writes
    for name in ("items.jsonl", "users.jsonl", "sequences.jsonl", "preferences.jsonl"):
        assert (capped / name).read_bytes() == (ml100k / name).read_bytes()
    again, other_seed = tmp_path / "again", tmp_path / "other_seed"
    build_dataset("movielens", "recbole", again, DataConfig(intentions_per_user=3))
    build_dataset("movielens", "recbole", other_seed, DataConfig(intentions_per_user=3, seed=1))
    assert (again / "intentions.jsonl").read_bytes() == (capped / "intentions.jsonl").read_bytes()
    other = {(r["user_id"], r["item_id"]) for r in load_dataset(other_seed).intentions}
    assert other != {(r["user_id"], r["item_id"]) for r in rows}


def test_intentions_per_user_is_part_of_the_dataset_fingerprint(ml100k, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(ml100k, folder)
    assert "intentions_per_user" not in fingerprint_options(DataConfig())  # unset: folders and runs made before
    assert fingerprint_options(DataConfig(intentions_per_user=3))["intentions_per_user"] == 3
    assert build_dataset("movielens", "recbole", folder, DataConfig()).up_to_date
    with pytest.raises(DataError, match="already holds a different dataset"):
        build_dataset("movielens", "recbole", folder, DataConfig(intentions_per_user=3))
    with pytest.raises(ConfigError, match="intentions_per_user=0"):
        DataConfig(intentions_per_user=0).validate()


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


def test_users_without_profile_reviews_or_ratings_get_texts_from_their_history():
    items = {f"d{k}": Item(f"d{k}", f"Drama {k}", "", ["Drama"], {"year": 1994}) for k in range(4)}
    items |= {"c0": Item("c0", "Comedy 0", "", ["Comedy"]), "x": Item("x", "Untagged", "", [], {"price": 12.5})}
    ids = ["d0", "c0", "d1", "x", "d2", "d3"]
    dataset = Dataset(
        items=items, users={"u": User("u")}, sequences={"u": Sequence("u", ids, list(range(6)), None, None, None)}
    )
    add_task_texts(dataset, DataConfig())
    profile, preference = dataset.users["u"].profile, dataset.preferences["u"]
    assert re.search(r"\b4\b", profile) and "Drama and Comedy" in profile and "rating" not in profile  # 4 train items
    assert "Drama and Comedy" in preference and "avoid" not in preference
    queries = {row["item_id"]: row["query"] for row in dataset.intentions}
    assert list(queries) == ["c0", "d1", "x"]
    assert "Drama" in queries["d1"] and "1990s" in queries["d1"] and "Drama 1" not in queries["d1"]
    assert "under $20" in queries["x"] and "Untagged" not in queries["x"]  # no category: the fallback template


def test_same_seed_same_texts_other_seed_other_paraphrases():
    first, second, other = crafted_dataset(), crafted_dataset(), crafted_dataset()
    add_task_texts(first, DataConfig(seed=3))
    add_task_texts(second, DataConfig(seed=3))
    add_task_texts(other, DataConfig(seed=4))
    assert first.intentions == second.intentions and first.preferences == second.preferences
    assert [u.profile for u in first.users.values()] == [u.profile for u in second.users.values()]
    assert first.intentions != other.intentions


def teach_to_answer(folder, pairs: list[tuple[str, str]], steps: int = 80) -> None:
    """Fine-tune the tiny LM for a few steps to answer each prompt with its answer, so its outputs are known."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer.padding_side = "left"  # as the writer generates
    texts = [LLMTextWriter.render(tokenizer, prompt) + answer + tokenizer.eos_token for prompt, answer in pairs]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    model.save_pretrained(folder)


def test_llm_writer_generates_offline_falls_back_on_empty_outputs_and_reuses_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "lm"
    config = DataConfig(text_generator="llm", text_model=str(folder), text_cache=str(tmp_path / "cache"))
    config.text_max_new_tokens = 8
    texts = TaskTexts(crafted_dataset(), config)
    prompt = Instructions(config.seed)
    requests = {prompt(r): r for r in [*texts.user_requests(), *texts.intention_requests()]}
    # The model answers profile prompts with nothing at all (-> template text), the others with a known phrase.
    pairs = [(p, "" if r.kind == "profile" else "cozy jazz records") for p, r in requests.items()]
    build_tiny_causal_lm([text for pair in pairs for text in pair], folder, vocab_size=1000)
    teach_to_answer(folder, pairs)

    dataset, templated = crafted_dataset(), crafted_dataset()
    add_task_texts(dataset, config)
    add_task_texts(templated, DataConfig())
    cache_files = list((tmp_path / "cache").glob("*.jsonl"))
    assert len(cache_files) == 1
    records = [json.loads(line) for line in cache_files[0].read_text().splitlines()]
    assert len(records) == len(requests) == 1 + 7 + 1  # both users have the same facts: a profile, 7 intentions...
    assert sorted(r["text"] for r in records) == [""] + ["cozy jazz records"] * 8
    assert all(r["query"] == "cozy jazz records" for r in dataset.intentions)
    assert all(dataset.preferences[u] == "cozy jazz records" for u in ("u1", "u2"))
    assert [u.profile for u in dataset.users.values()] == [u.profile for u in templated.users.values()]

    again = crafted_dataset()
    add_task_texts(again, config)  # everything is cached: nothing is generated, so nothing is appended
    assert (again.preferences, again.intentions) == (dataset.preferences, dataset.intentions)
    assert len(cache_files[0].read_text().splitlines()) == len(records)


def test_llm_generator_needs_a_model_folder(tmp_path):
    with pytest.raises(Exception, match="text_model"):
        DataConfig(text_generator="llm").validate()
    with pytest.raises(Exception, match="expected a local model folder"):
        add_task_texts(crafted_dataset(), DataConfig(text_generator="llm", text_model=str(tmp_path)))
    for options in ({"text_generator": "llm", "text_model": str(tmp_path)}, {"sentiment_model": "/nope"}):
        name = "text_model" if "text_model" in options else "sentiment_model"  # refused before the raw files are read
        with pytest.raises(ConfigError, match=rf"{name}='[^']+': expected a local model folder with config\.json"):
            DataConfig(**options).validate()


def test_prompt_folder_override_and_bad_prompt_files(tmp_path, monkeypatch):
    shipped = load_prompts("data_texts", TEMPLATE_KINDS)
    custom = {kind: ["CUSTOM " + templates[0]] for kind, templates in shipped.items()}
    (tmp_path / "data_texts.yaml").write_text(yaml.safe_dump(custom))
    monkeypatch.setenv("ALIGN3GR_PROMPTS", str(tmp_path))
    dataset = crafted_dataset()
    add_task_texts(dataset, DataConfig())
    assert all(row["query"].startswith("CUSTOM ") for row in dataset.intentions)
    assert all(text.startswith("CUSTOM ") for text in dataset.preferences.values())

    (tmp_path / "data_texts.yaml").write_text(yaml.safe_dump({**custom, "intention": ["Find {title} for me"]}))
    with pytest.raises(ConfigError, match=r"data_texts.yaml: 'intention': template 'Find \{title\} for me' uses"):
        add_task_texts(crafted_dataset(), DataConfig())
    for template, used in (("In {categories.x}", "categories.x"), ("{categories:{width}}", "width"), ("{}", "")):
        (tmp_path / "data_texts.yaml").write_text(yaml.safe_dump({**custom, "intention": [template]}))
        with pytest.raises(ConfigError, match=rf"uses \['{re.escape(used)}'\]; the placeholders available"):
            add_task_texts(crafted_dataset(), DataConfig())
    (tmp_path / "data_texts.yaml").write_text(yaml.safe_dump({k: v for k, v in custom.items() if k != "intention"}))
    with pytest.raises(ConfigError, match="'intention' must be a template string or a non-empty list"):
        add_task_texts(crafted_dataset(), DataConfig())
    monkeypatch.setenv("ALIGN3GR_PROMPTS", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="prompt file not found"):
        add_task_texts(crafted_dataset(), DataConfig())


def test_tiny_causal_lm_is_an_ordinary_deterministic_model_folder(tmp_path):
    texts = [f"user {k} enjoys Drama and Thriller films from the {1950 + 10 * (k % 5)}s" for k in range(50)]
    first = build_tiny_causal_lm(texts, tmp_path / "a", vocab_size=400, seed=1)
    second = build_tiny_causal_lm(texts, tmp_path / "b", vocab_size=400, seed=1)
    other = build_tiny_causal_lm(texts, tmp_path / "c", vocab_size=400, seed=2)
    names = sorted(f.name for f in first.iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()

    tokenizer = AutoTokenizer.from_pretrained(first, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(first, local_files_only=True)
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 64
    assert model.config.vocab_size == len(tokenizer) <= 400 and tokenizer.model_max_length == 1024
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    text = "user 7 enjoys Drama films"
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    inputs = tokenizer(["user 7"], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output[0, : inputs["input_ids"].shape[1]].tolist() == inputs["input_ids"][0].tolist()


def test_cache_locations_stay_out_of_the_step_keys():
    """Where texts or summaries are cached is not what they are: moving a cache keeps every step key, a nested
    option mapping's keys as written otherwise."""
    assert fingerprint_options(DataConfig(text_cache="/a")) == fingerprint_options(DataConfig(text_cache="/b"))
    unisid = {"summary_max_new_tokens": 32}
    keys = [
        fingerprint_options(TokenizeConfig(item_tokenizer="unisid", unisid_options={**unisid, **cache}))
        for cache in ({}, {"summary_cache": "/a"}, {"summary_cache": "/b"})
    ]
    assert keys[0] == keys[1] == keys[2] and keys[0]["unisid_options"] == unisid
