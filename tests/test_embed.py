"""The embed stage: frozen semantic encoders (sentence-transformers and plain HF with mean pooling), the cache,
and the collaborative encoder trained on the training split only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast

from align3gr.data.dataset import Dataset, load_dataset
from align3gr.data.schema import Item, Sequence, User
from align3gr.devices import numerics
from align3gr.embed.collaborative import load_encoder, train_collaborative, training_windows
from align3gr.embed.config import EmbedConfig
from align3gr.embed.semantic import SemanticEncoder
from align3gr.embed.stage import Embeddings, item_text, run_embed
from align3gr.errors import DataError

TEXTS = ["an electric guitar with warm tone", "a snare drum", "an electric guitar with warm tone"]


def test_minilm_encodes_and_caches(tmp_path):
    encoder = SemanticEncoder()
    vectors = encoder.encode(TEXTS, tmp_path)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[2])
    assert encoder.stats == {"texts": 3, "encoded": 2, "cached": 0}  # the repeated text is encoded once
    again = SemanticEncoder()
    assert np.array_equal(again.encode(TEXTS, tmp_path), vectors)
    assert again.stats == {"texts": 3, "encoded": 0, "cached": 3}
    assert len(list(tmp_path.glob("*.single.safetensors"))) == 1  # this machine's canary: one cache file


def test_vectors_cached_under_another_instruction_set_are_not_reused(tmp_path):
    """torch's kernels for another CPU instruction set (here the portable ones, as on an older CPU sharing the
    cache folder) round the same texts otherwise: their cache is another file, and this run's vectors are its own."""
    if torch.backends.cpu.get_cpu_capability() == "default":
        pytest.skip("this CPU already runs torch's portable kernels")
    fill = (
        "from align3gr.embed.semantic import SemanticEncoder; import sys; SemanticEncoder().encode(sys.argv[1:], '.')"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    subprocess.run([sys.executable, "-c", fill, *TEXTS], cwd=tmp_path, env=env, check=True)
    assert len(list(tmp_path.glob("*.single.safetensors"))) == 1
    here = SemanticEncoder()
    vectors = here.encode(TEXTS, tmp_path)
    assert here.stats == {"texts": 3, "encoded": 2, "cached": 0}
    assert len(list(tmp_path.glob("*.single.safetensors"))) == 2
    assert np.array_equal(vectors, SemanticEncoder().encode(TEXTS))


def test_vectors_cached_by_other_arithmetic_are_not_reused(tmp_path, monkeypatch):
    """Another torch release (or kind of device, or Transformers release) rounds the same texts otherwise: its
    cache is another file, so a run's vectors never depend on where its cache was filled."""
    SemanticEncoder().encode(TEXTS, tmp_path)
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    other = SemanticEncoder()
    other.encode(TEXTS, tmp_path)
    assert other.stats == {"texts": 3, "encoded": 2, "cached": 0}
    assert len(list(tmp_path.glob("*.single.safetensors"))) == 2


def test_a_vector_depends_on_its_text_alone(tmp_path, ml100k_small):
    """A warm cache filled with other texts gives the vectors of a cold run bit for bit (batched forwards round
    each row with its neighbours, which changed a run's codes)."""
    texts = [item_text(item) for item in load_dataset(ml100k_small).items.values()][:12]
    cold = SemanticEncoder().encode(texts)
    SemanticEncoder().encode(texts[5:] + ["a snare drum"], tmp_path)
    warm = SemanticEncoder()
    assert np.array_equal(warm.encode(texts, tmp_path), cold)
    assert warm.stats == {"texts": 12, "encoded": 5, "cached": 7}
    batched = SemanticEncoder(batch_size=4)
    assert np.allclose(batched.encode(texts, tmp_path), cold, atol=1e-6)
    assert batched.stats["cached"] == 0  # batched vectors never meet the per-text cache


def tiny_bert(folder, nan: bool = False):
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(TEXTS, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32))  # fmt: skip
    if nan:
        with torch.no_grad():
            model.embeddings.word_embeddings.weight.fill_(float("nan"))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_plain_hf_encoder_uses_mean_pooling(tmp_path):
    folder = tiny_bert(tmp_path / "bert")
    vectors = SemanticEncoder(str(folder)).encode(TEXTS[:2])
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-5)


def test_nan_embeddings_are_an_error(tmp_path):
    with pytest.raises(DataError, match="NaN or infinite"):
        SemanticEncoder(str(tiny_bert(tmp_path / "bert", nan=True))).encode(TEXTS[:1])


def test_training_windows_cover_the_training_sequence():
    windows = training_windows([[1, 2, 3, 4, 5]], max_len=2)
    assert windows.tolist() == [[3, 4, 5], [1, 2, 3]]


def test_collaborative_encoder_is_deterministic_and_ignores_held_out_targets(ml100k_small):
    dataset = load_dataset(ml100k_small)
    first = train_collaborative(dataset, EmbedConfig(cf_epochs=2, seed=3))
    again = train_collaborative(dataset, EmbedConfig(cf_epochs=2, seed=3))
    assert np.array_equal(first.items, again.items) and np.array_equal(first.users, again.users)
    assert first.items.shape == (len(dataset.items), 64) and first.users.shape == (len(dataset.sequences), 64)
    for seq in dataset.sequences.values():  # other test targets leave training (and selection) unchanged
        seq.items[-1] = next(i for i in reversed(dataset.items) if i not in seq.items)
    swapped = train_collaborative(dataset, EmbedConfig(cf_epochs=2, seed=3))
    assert np.array_equal(first.items, swapped.items) and np.array_equal(first.users, swapped.users)


def test_run_embed_writes_reloadable_artifacts(
    ml100k_small, ml100k_small_embeddings, semantic_cache, semantic_cache_lock, tmp_path
):
    """A run whose cache holds another run's texts encodes none of them and gives that run's vectors."""
    with semantic_cache_lock:
        shutil.copytree(semantic_cache, tmp_path / "cache")
    config = EmbedConfig(cf_epochs=2, cache_dir=str(tmp_path / "cache"))
    built = run_embed(ml100k_small, tmp_path / "embeddings", config)
    loaded = Embeddings.load(tmp_path / "embeddings")
    dataset = load_dataset(ml100k_small)
    assert loaded.item_ids == list(dataset.items) and loaded.user_ids == list(dataset.sequences)
    assert loaded.item_semantic.shape == (len(dataset.items), 384)
    assert np.array_equal(loaded.user_cf, built.user_cf)
    encoder = load_encoder(tmp_path / "embeddings")  # the encoder behind the CF features, for the sasrec baseline
    assert np.array_equal(encoder.items.weight[1:].detach().numpy(), loaded.item_cf)
    assert encoder.hyperparameters["max_len"] == dataset.max_history and not encoder.training
    assert 0.0 <= loaded.report["collaborative_valid_recall@10"] <= 1.0
    assert loaded.report["numerics"] == numerics()  # threads and instruction set, which decide the float bits
    assert "Categories: " in item_text(next(iter(dataset.items.values())))
    cache_use = built.report["semantic_cache"]
    assert cache_use["items"] == {"texts": len(dataset.items), "encoded": 0, "cached": len(dataset.items)}
    assert cache_use["users"]["encoded"] == 0
    first = Embeddings.load(ml100k_small_embeddings)
    assert np.array_equal(loaded.item_semantic, first.item_semantic)
    assert np.array_equal(loaded.user_semantic, first.user_semantic)


def test_a_catalogue_smaller_than_the_valid_cut_off_trains(tmp_path):
    """Six items: the collaborative encoder's valid Recall@10 ranks the whole catalogue instead of failing."""
    from test_data_errors import write_small_grouplens

    from align3gr.data.build import build_dataset

    build_dataset("movielens", write_small_grouplens(tmp_path / "raw"), tmp_path / "data")
    dataset = load_dataset(tmp_path / "data")
    encoder = train_collaborative(dataset, EmbedConfig(cf_epochs=2), torch.device("cpu"))
    assert encoder.items.shape[0] == len(dataset.items) and 0.0 <= encoder.valid_recall_at_10 <= 1.0


def test_an_unreadable_embedding_cache_is_a_miss_and_is_rewritten_whole(tmp_path, caplog):
    """A cache file cut short (a crash of an older release, a full disk) must not stop every later embed: it is read as
    empty, with a warning naming it, and the next save replaces it through an owned temporary name."""
    from align3gr.embed.semantic import EmbeddingCache

    path = tmp_path / "cache" / "model.safetensors"
    cache = EmbeddingCache(path)
    entries = {"ab" * 16: np.ones(4, dtype=np.float32), "cd" * 16: np.zeros(4, dtype=np.float32)}
    cache.save(entries)
    path.write_bytes(path.read_bytes()[:20])
    with caplog.at_level("WARNING"):
        assert cache.load() == {}
    assert f"{path}: unreadable embedding cache" in caplog.text
    cache.save(entries)
    assert {key: value.tolist() for key, value in cache.load().items()} == {k: v.tolist() for k, v in entries.items()}
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_collaborative_encoder_without_a_training_pair_says_so():
    """Every user with 3 interactions (allowed by `user_k: 3`) leaves one training item each: no next-item pair to
    learn from, named instead of torch's reshape error."""
    items = {f"i{k}": Item(f"i{k}", f"Item {k}") for k in range(4)}
    sequences = {u: Sequence(u, ["i0", "i1", "i2"][k:] + ["i3", "i0", "i1"][:k], [1, 2, 3]) for k, u in enumerate("ab")}
    dataset = Dataset(items=items, users={u: User(u) for u in sequences}, sequences=sequences, meta={"max_history": 20})
    with pytest.raises(DataError, match=r"sequences\.jsonl: no user has a training pair .* at least 4 interactions"):
        train_collaborative(dataset, EmbedConfig(cf_epochs=1))
