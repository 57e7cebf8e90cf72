"""Feedback levels for RF-DPO (disliked / neutral / liked) from ratings or from a sentiment model over reviews."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable, Iterator

from align3gr.data.dataset import Dataset
from align3gr.data.schema import Sequence
from align3gr.errors import ConfigError

log = logging.getLogger(__name__)

_STAR = re.compile(r"(\d+(?:\.\d+)?)")
_POLARITY = {"negative": 1.0, "neg": 1.0, "neutral": 3.0, "neu": 3.0, "positive": 5.0, "pos": 5.0}


def feedback_level(rating: float, disliked_max: float = 1.0, liked_min: float = 4.0) -> str:
    """Align3GR's RF-DPO mapping: disliked (<= 1), neutral (2-3), liked (>= 4), thresholds configurable."""
    if rating <= disliked_max:
        return "disliked"
    if rating >= liked_min:
        return "liked"
    return "neutral"


def label_to_rating(label: str, num_labels: int) -> float:
    """Map a classifier label to a 1-5 score: star counts ('4 stars'), polarity words, or 'LABEL_k'
    (class k of `num_labels` ordered classes, spread evenly over 1-5)."""
    text = label.strip().lower()
    if text in _POLARITY:
        return _POLARITY[text]
    match = _STAR.search(text)
    if match is None:
        raise ConfigError(
            f"sentiment label {label!r} is neither a star count ('1 star'..'5 stars') nor negative/neutral/positive"
        )
    value = float(match.group(1))
    if text.startswith("label_"):
        return 1.0 + 4.0 * value / max(1, num_labels - 1)
    return value


def score_reviews(texts: Iterable[str], model_path: str, batch_size: int = 32, chunk: int = 4096) -> Iterator[float]:
    """A 1-5 score per review text from a local text-classification model, lazily: the texts are read and scored
    `chunk` at a time, so a build's spooled reviews never all sit in memory."""
    from transformers import pipeline

    classifier = pipeline("text-classification", model=model_path, tokenizer=model_path, device="cpu")
    num_labels = classifier.model.config.num_labels
    iterator = iter(texts)
    while part := list(itertools.islice(iterator, chunk)):
        for output in classifier(part, batch_size=batch_size, truncation=True):
            yield label_to_rating(output["label"], num_labels)


def assign_feedback(
    dataset: Dataset, disliked_max: float, liked_min: float, sentiment_model: str | None = None
) -> str | None:
    """Set `Sequence.feedback` for every user; returns the signal used ('sentiment', 'ratings' or None)."""
    sequences = list(dataset.sequences.values())
    if sentiment_model:
        if not all(seq.reviews is not None for seq in sequences):
            raise ConfigError("sentiment_model is set but this dataset has no review text to score")
        texts = (review for seq in sequences for review in seq.reviews or [] if review.strip())
        scores = score_reviews(texts, sentiment_model)
        for seq in sequences:
            seq.feedback = [
                feedback_level(next(scores), disliked_max, liked_min)
                if review.strip()
                else _without_review(seq, position, disliked_max, liked_min)
                for position, review in enumerate(seq.reviews or [])
            ]
        return "sentiment"
    if all(seq.ratings is not None for seq in sequences):
        for seq in sequences:
            seq.feedback = [feedback_level(r, disliked_max, liked_min) for r in seq.ratings or []]
        return "ratings"
    log.info("no ratings and no sentiment model: feedback levels left empty")
    return None


def _without_review(seq: Sequence, position: int, disliked_max: float, liked_min: float) -> str:
    """An interaction with no review text: its rating's level where there is one, else neutral."""
    if seq.ratings is None:
        return "neutral"
    return feedback_level(seq.ratings[position], disliked_max, liked_min)
