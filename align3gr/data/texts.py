"""Task texts built with the dataset (Align3GR, Figure 3): a profile for every user (B2), a search intention
per training target (C2; or per `intentions_per_user` of them) and a preference statement per user (C3).

Only each user's training part (`items[:-2]`) is read, so no valid or test target leaks into any text. Texts
come from templates (`prompts/data_texts.yaml`, one paraphrase drawn per text with the dataset seed) or, with
`text_generator: llm`, from a local causal LM given the same facts (`align3gr.data.text_writer`).
Intentions never contain the target's title (nor a word of the user's review that shares a part with it, "Amélie",
"Spider-Man", "1984"): task C2 must recover the item from what the user wants, not from its name.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from collections.abc import Sequence as SequenceOf
from typing import NamedTuple

from align3gr.data.config import DataConfig
from align3gr.data.dataset import Dataset, kept_positions
from align3gr.data.schema import Item, Sequence
from align3gr.data.text_writer import LLMTextWriter, TextRequest
from align3gr.prompts import load_prompts, pick

_WORD = re.compile(r"[^\W\d_][\w']{2,}")
"""A review word: a letter, then two or more letters, digits, underscores or apostrophes (any script)."""
_PART = re.compile(r"\w+")
_PUNCTUATION = ".,!?\"'"
_NOT_WORD_CHARS = str.maketrans({chr(c): " " for c in range(128) if not (chr(c).isalnum() or chr(c) in "_'")})
"""Maps every ASCII character that `_WORD` cannot match to a space: an ASCII text's words are then its runs of
[a-z0-9_'] without their leading digits, underscores and apostrophes, when three characters or longer."""
_BEFORE_FIRST_LETTER = "'_0123456789"
SENTENCE_ENDS = ".!?…"
STOPWORDS = frozenset(
    """the and for that this with was but not are you have had has its it's they them their there then than
    very just one all can will would could should about what when which who how out get got use used really
    also more most much some any only other into from were been being did does doing don't too well even
    like i'm i've our your his her she him because after before over again still these those such each
    make made time good great nice item product thing things bought buy love loved movie film""".split()
)
UNINFORMATIVE_SHARE = 0.9
TEMPLATE_KINDS = {
    "profile_history": ("count", "categories", "rating"),
    "profile_reviews": ("words",),
    "intention": ("categories", "details", "wish"),
    "intention_fallback": ("details", "wish"),
    "preference_liked": ("liked", "examples", "disliked"),
    "preference_frequent": ("liked", "examples"),
}


def join_phrase(values: list[str]) -> str:
    """'', 'A', 'A and B', 'A, B and C'."""
    return ", ".join(values[:-1]) + " and " + values[-1] if len(values) > 1 else "".join(values)


def informative_categories(dataset: Dataset) -> set[str]:
    """The categories on fewer than `UNINFORMATIVE_SHARE` of the items (all of them in catalogues under 10 items):
    a near-universal root ('Musical Instruments' on every Amazon item) says nothing about an item."""
    share = Counter(c for item in dataset.items.values() for c in set(item.categories))
    limit = UNINFORMATIVE_SHARE * len(dataset.items)
    return {c for c, n in share.items() if n < limit or len(dataset.items) < 10}


def title_parts(title: str) -> frozenset[str]:
    """What an intention must not say of its target's title: the title's casefolded runs of letters and digits
    (`\\w+`) of two characters or more, and its numbers ("Spider-Man 2" gives spider, man, 2)."""
    return frozenset(p for p in _PART.findall(title.casefold()) if len(p) > 1 or p.isdigit())


def names_title(word: str, parts: frozenset[str]) -> bool:
    """Whether a review word (as `str.split` gives it) shares a part with the title (`title_parts`)."""
    key = word.casefold().strip(_PUNCTUATION)
    if key.isalnum():  # one part: most words, checked without the regex
        return key in parts
    return any(p in parts for p in _PART.findall(key))


class Target(NamedTuple):
    """What an intention takes from its target item alone, worked out once per item (not once per user)."""

    kind: str
    categories: str
    details: str
    facts: dict[str, str]
    title_words: frozenset[str]


class TaskTexts:
    """Builds the facts and template texts of one dataset's users and training targets."""

    def __init__(self, dataset: Dataset, config: DataConfig) -> None:
        self.dataset = dataset
        self.config = config
        self.prompts = load_prompts("data_texts", TEMPLATE_KINDS)
        self.informative = informative_categories(dataset)
        self._kept: dict[str, list[str]] = {}
        self._targets: dict[str, Target] = {}

    def categories(self, item: Item, finest: int | None = None) -> list[str]:
        """The item's categories minus near-universal roots ('Musical Instruments' on every item)."""
        kept = self._kept.get(item.item_id)
        if kept is None:
            kept = self._kept[item.item_id] = [c for c in item.categories if c in self.informative]
        return kept[-finest:] if finest else kept[:]

    def is_liked(self, seq: Sequence, position: int) -> bool:
        if seq.feedback is not None:
            return seq.feedback[position] == "liked"
        return seq.ratings is None or seq.ratings[position] >= self.config.liked_min

    def top_categories(self, item_ids: list[str], count: int) -> list[str]:
        items = self.dataset.items
        counts = Counter(itertools.chain.from_iterable(self.categories(items[i]) for i in item_ids))
        return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:count]]

    def profile(self, user_id: str) -> TextRequest:
        seq = self.dataset.sequences[user_id]
        train = seq.train_items
        facts: dict[str, str] = {}
        parts: list[str] = []
        existing = self.dataset.users[user_id].profile.strip()
        if existing:
            facts["about"] = existing
            parts.append(existing if existing[-1] in SENTENCE_ENDS else existing + ".")  # the next one is a sentence
        cats = self.top_categories(train, 3) or ["a mix of items"]
        ratings = seq.train_ratings
        rating = f" (average rating {sum(ratings) / len(ratings):.1f})" if ratings else ""
        facts.update(interactions=str(len(train)), categories=join_phrase(cats))
        template = pick(self.prompts["profile_history"], self.config.seed, "profile", user_id)
        parts.append(template.format(count=len(train), categories=join_phrase(cats), rating=rating))
        words = self.review_words(seq.train_reviews or [])
        if words:
            facts["review_words"] = join_phrase(words)
            template = pick(self.prompts["profile_reviews"], self.config.seed, "reviews", user_id)
            parts.append(template.format(words=join_phrase(words)))
        return TextRequest("profile", user_id, facts, " ".join(parts))

    @staticmethod
    def review_words(reviews: SequenceOf[str], count: int = 4, chunk: int = 256) -> list[str]:
        """The `count` most frequent non-stopwords (`_WORD`) said more than once. Reviews are scanned `chunk` at a
        time, joined by a space (which no word spans), so splitting and counting run in C over many reviews."""
        runs: Counter[str] = Counter()
        for start in range(0, len(reviews), chunk):
            text = " ".join(reviews[start : start + chunk]).lower()
            runs.update(text.translate(_NOT_WORD_CHARS).split() if text.isascii() else _WORD.findall(text))
        counts: dict[str, int] = {}
        for run, n in runs.items():
            word = run.lstrip(_BEFORE_FIRST_LETTER)  # what `_WORD` finds in a run of [a-z0-9_'] (its finds stay)
            if len(word) >= 3 and word not in STOPWORDS:
                counts[word] = counts.get(word, 0) + n
        return [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:count] if n > 1]

    def intention(self, seq: Sequence, position: int, review: str | None = None) -> TextRequest:
        """The intention of one training target; `review` is its review when the caller has read it already."""
        item_id = seq.items[position]
        target = self._targets.get(item_id) or self.target(item_id)
        facts = dict(target.facts)
        wish = ""
        if review is None:
            review = seq.reviews[position] if seq.reviews is not None else ""
        if review and not review.isspace():
            title_words, words = target.title_words, review.split(None, 8)  # the first 8 words, then the rest
            kept = [w for w in words[:8] if not names_title(w, title_words)]
            if len(kept) < 8 and len(words) > 8:  # title words were left out: take more from the rest
                rest = (w for w in words[8].split() if not names_title(w, title_words))
                kept.extend(itertools.islice(rest, 8 - len(kept)))
            snippet = " ".join(kept).strip(" " + _PUNCTUATION)
            if snippet:
                facts["user_said"] = snippet
                wish = f', ideally "{snippet}"'
        template = pick(self.prompts[target.kind], self.config.seed, "intention", seq.user_id, item_id)
        text = template.format(categories=target.categories, details=target.details, wish=wish)
        return TextRequest("intention", f"{seq.user_id}\t{item_id}", facts, text)

    def target(self, item_id: str) -> Target:
        """The intention facts of an item as a target (its finest categories, details, title words), cached."""
        item = self.dataset.items[item_id]
        cats = self.categories(item, finest=2)
        details = self.item_details(item)
        facts = {"categories": join_phrase(cats)} if cats else {}
        facts.update({k: v.strip(" ,") for k, v in details.items()})
        title_words = title_parts(item.title)
        kind = "intention" if cats else "intention_fallback"
        target = Target(kind, join_phrase(cats), "".join(details.values()), facts, title_words)
        self._targets[item_id] = target
        return target

    @staticmethod
    def item_details(item: Item) -> dict[str, str]:
        """Attribute phrases that describe without naming: decade, brand, price band."""
        details: dict[str, str] = {}
        year = item.attributes.get("year")
        if isinstance(year, int):
            details["era"] = f" from the {year // 10 * 10}s"
        brand = item.attributes.get("brand")
        if isinstance(brand, str) and brand.strip() and brand.lower() not in item.title.lower():
            details["brand"] = f" by {brand.strip()}"
        price = item.attributes.get("price")
        if isinstance(price, int | float) and 0 < price < math.inf:
            details["price"] = f" under ${max(10, math.ceil(price / 10) * 10)}"
        return details

    def preference(self, user_id: str) -> TextRequest:
        seq = self.dataset.sequences[user_id]
        train = seq.train_items
        liked = [i for p, i in enumerate(train) if self.is_liked(seq, p)]
        disliked = [i for p, i in enumerate(train) if seq.feedback is not None and seq.feedback[p] == "disliked"]
        has_signal = seq.feedback is not None or seq.ratings is not None
        basis = liked if liked and has_signal else train
        cats = self.top_categories(basis, 3) or ["a broad mix of items"]
        titles = [self.dataset.items[i].title for i in basis[::-1][:2]]
        examples = f", especially {join_phrase(titles)}" if titles else ""
        avoided = [c for c in self.top_categories(disliked, 2) if c not in cats] if len(disliked) >= 2 else []
        facts = {"likes": join_phrase(cats), "recent_favourites": join_phrase(titles)}
        if avoided:
            facts["dislikes"] = join_phrase(avoided)
        kind = "preference_liked" if has_signal else "preference_frequent"
        template = pick(self.prompts[kind], self.config.seed, "preference", user_id)
        dislike_clause = f", and tends to avoid {join_phrase(avoided)}" if avoided else ""
        text = template.format(liked=join_phrase(cats), examples=examples, disliked=dislike_clause)
        return TextRequest("preference", user_id, facts, text)

    def user_requests(self) -> list[TextRequest]:
        """A profile and a preference statement per user."""
        return [self.profile(u) for u in self.dataset.sequences] + [self.preference(u) for u in self.dataset.sequences]

    def intention_requests(self) -> Iterator[TextRequest]:
        """An intention per training target (or per `intentions_per_user` of them), lazily: millions at catalogue
        scale (a user's reviews are read in one go)."""
        for seq in self.dataset.sequences.values():
            reviews = seq.reviews[1:-2] if seq.reviews is not None else None
            for position in self.intention_positions(seq):
                yield self.intention(seq, position, reviews[position - 1] if reviews is not None else "")

    def intention_positions(self, seq: Sequence) -> SequenceOf[int]:
        """The training targets of `seq` that get an intention: every one (positions 1 to len - 3; the first item
        has no history), or a sample of `intentions_per_user` drawn from the seed and the user, ascending."""
        positions = range(1, len(seq.items) - 2)
        cap = self.config.intentions_per_user
        if cap is None:
            return positions
        rng = random.Random(hashlib.sha256(f"{self.config.seed}:intentions:{seq.user_id}".encode()).digest())
        return [positions[k] for k in kept_positions(len(positions), cap, rng)]


def write_texts(
    requests: Iterable[TextRequest], config: DataConfig, chunk_size: int = 4096
) -> Iterator[tuple[TextRequest, str]]:
    """Each request with its text, in order: its template rendering, or an LLM's (processed in chunks)."""
    if config.text_generator != "llm":
        for request in requests:
            yield request, request.template
        return
    writer = LLMTextWriter(config)
    iterator = iter(requests)
    while chunk := list(itertools.islice(iterator, chunk_size)):
        yield from zip(chunk, writer.write(chunk), strict=True)


def add_user_texts(dataset: Dataset, config: DataConfig) -> None:
    """Fill every user's profile and `dataset.preferences` from the training part only."""
    requests = TaskTexts(dataset, config).user_requests()
    dataset.preferences = {}
    for request, text in write_texts(requests, config):
        if request.kind == "profile":
            dataset.users[request.key].profile = text
        else:
            dataset.preferences[request.key] = text


def iter_intentions(dataset: Dataset, config: DataConfig) -> Iterator[dict]:
    """`{"user_id", "item_id", "query"}` per target of `intention_requests`, generated as they are consumed (a build
    writes them straight to `intentions.jsonl`, so they are never all in memory)."""
    for request, text in write_texts(TaskTexts(dataset, config).intention_requests(), config):
        user_id, item_id = request.key.split("\t")
        yield {"user_id": user_id, "item_id": item_id, "query": text}


def add_task_texts(dataset: Dataset, config: DataConfig) -> None:
    """Profiles, preferences and (in memory) intentions, for datasets held in memory."""
    dataset.intentions = list(iter_intentions(dataset, config))
    add_user_texts(dataset, config)
