"""Feedback levels from ratings and from a real (tiny, local) sentiment classifier over review text."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
)

from align3gr.data.dataset import Dataset
from align3gr.data.feedback import assign_feedback, feedback_level, label_to_rating, score_reviews
from align3gr.data.schema import Item, Sequence, User
from align3gr.errors import ConfigError
from align3gr.seeding import seeded

REVIEWS = ["awful broke at once", "fine I guess", "", "wonderful tone love it", "meh average sound"]


def test_rating_thresholds():
    assert [feedback_level(r) for r in (1, 2, 3, 4, 5)] == ["disliked", "neutral", "neutral", "liked", "liked"]
    assert feedback_level(2, disliked_max=2, liked_min=5) == "disliked"
    assert feedback_level(4.5, disliked_max=2, liked_min=5) == "neutral"


def test_label_to_rating():
    assert label_to_rating("4 stars", 5) == 4.0
    assert label_to_rating("1 star", 5) == 1.0
    assert label_to_rating("LABEL_0", 5) == 1.0
    assert label_to_rating("LABEL_4", 5) == 5.0
    assert label_to_rating("LABEL_1", 2) == 5.0
    assert label_to_rating("POSITIVE", 2) == 5.0
    assert label_to_rating("negative", 3) == 1.0
    with pytest.raises(ConfigError, match="neither a star count"):
        label_to_rating("happy", 2)


@pytest.fixture(scope="module")
def sentiment_model(tmp_path_factory):
    """A tiny 5-class BERT classifier with a word-level tokenizer, saved as an ordinary model folder."""
    folder = tmp_path_factory.mktemp("sentiment")
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(REVIEWS, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    labels = {i: f"{i + 1} star" + ("s" if i else "") for i in range(5)}
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_labels=5, id2label=labels, label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    with seeded(0):
        BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def reviewed_dataset(ratings: list[int] | None) -> Dataset:
    items = {f"i{k}": Item(f"i{k}", f"Item {k}") for k in range(5)}
    seq = Sequence("u", list(items), list(range(5)), ratings, list(REVIEWS))
    return Dataset(items=items, users={"u": User("u")}, sequences={"u": seq})


def model_stars(texts: list[str], model_path: str) -> list[float]:
    """Each text's star count by the classifier itself: the argmax of its logits, named by the config's id2label
    ("k star(s)"), read as k."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path).eval()
    stars = []
    for text in texts:
        with torch.no_grad():
            logits = model(**tokenizer(text, return_tensors="pt", truncation=True)).logits[0]
        stars.append(float(model.config.id2label[int(logits.argmax())].split()[0]))
    return stars


def test_sentiment_model_scores_reviews(sentiment_model):
    texts = [review for review in REVIEWS if review]
    scores = list(score_reviews(texts, sentiment_model, chunk=1))
    assert scores == model_stars(texts, sentiment_model)
    assert scores == list(score_reviews(texts, sentiment_model))
    dataset = reviewed_dataset([5, 4, 1, 2, 3])
    assert assign_feedback(dataset, 1.0, 4.0, sentiment_model) == "sentiment"
    levels = dataset.sequences["u"].feedback
    assert len(levels) == 5 and set(levels) <= {"disliked", "neutral", "liked"}
    assert levels[2] == "disliked"  # an empty review falls back to its rating (1)
    expected = [feedback_level(s) for s in score_reviews([r for r in REVIEWS if r], sentiment_model)]
    assert [level for k, level in enumerate(levels) if REVIEWS[k]] == expected


def test_sentiment_without_ratings_and_without_reviews(sentiment_model):
    dataset = reviewed_dataset(None)
    assert assign_feedback(dataset, 1.0, 4.0, sentiment_model) == "sentiment"
    levels = dataset.sequences["u"].feedback
    assert len(levels) == 5 and set(levels) <= {"disliked", "neutral", "liked"}
    assert levels[2] == "neutral"  # empty review, no rating
    dataset.sequences["u"].reviews = None
    with pytest.raises(ConfigError, match="no review text"):
        assign_feedback(dataset, 1.0, 4.0, sentiment_model)


def test_ratings_give_levels_and_no_signal_gives_none():
    dataset = reviewed_dataset([5, 4, 1, 2, 3])
    assert assign_feedback(dataset, 1.0, 4.0) == "ratings"
    assert dataset.sequences["u"].feedback == ["liked", "liked", "disliked", "neutral", "neutral"]
    dataset = reviewed_dataset(None)
    assert assign_feedback(dataset, 1.0, 4.0) is None
    assert dataset.sequences["u"].feedback is None
