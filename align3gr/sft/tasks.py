"""The multi-task SFT data of Align3GR (Figure 3): one builder per task, each switchable (Table 4).

| task | Figure 3 | prompt -> completion |
|---|---|---|
| seq | A | user SCID + item SCID history -> next item SCID (or, `stream`: the user's items listed in order) |
| item_align | B1 | title / description -> item SCID; item SCID -> title |
| user_align | B2 | profile -> user SCID; user SCID -> profile |
| asym_title | C1-1 | item SCID history -> next item's title |
| asym_item | C1-2 | title history -> next item SCID |
| intention | C2 | user SCID + search query -> item SCID |
| preference | C3 | title history -> preference statement |

Examples of seq, asym_title, asym_item and intention come from the train split only (every prefix of each
training sequence, history cut to the dataset's `max_history`); profiles, intentions and preference statements
were written from training histories by the data stage. Valid and test targets never appear in a training example.
An SCID is its code tokens joined with no separator ("<a_1><b_2><c_3>").

Task A has two forms (`seq_format`). `prompt` is Figure 3's: the history inside the prompt, the next item as the
answer, one row per prefix. `stream` asks for the user's items in order (the `seq_stream` templates) and answers with
a window of up to `max_history + 1` of them, every one a target (`align3gr.sft.prompting.encode_listing`); the prompt
of a history is that answer cut after its last item, so decoding continues the listing. Both forms give the model the
same history and ask for the same next item; `stream` teaches all positions of a window in one row.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from align3gr.data.dataset import Dataset, Example, Split
from align3gr.errors import ConfigError
from align3gr.io import read_json
from align3gr.prompts import load_prompts
from align3gr.sft.prompting import code_ids, encode_completion, encode_listing, encode_prompt

PROMPT_FILE = "sft_tasks"
TEMPLATE_PLACEHOLDERS: dict[str, set[str]] = {
    "seq": {"user", "history"},
    "seq_stream": {"user"},
    "title_to_item": {"title"},
    "description_to_item": {"description"},
    "item_to_title": {"item"},
    "profile_to_user": {"profile"},
    "user_to_profile": {"user"},
    "scid_history_to_title": {"user", "history"},
    "title_history_to_item": {"user", "titles"},
    "intention": {"user", "query"},
    "preference": {"user", "titles"},
}
TASKS = ("seq", "item_align", "user_align", "asym_title", "asym_item", "intention", "preference")
ANONYMOUS_USER = "the user"
SEQ_FORMATS = {"prompt": "seq", "stream": "seq_stream"}
"""Each form of task A and the template kind of its prompts."""


@dataclass(frozen=True)
class SFTExample:
    """One prompt/completion pair, with the user and items it mentions (for the no-leakage checks)."""

    task: str
    prompt: str
    completion: str
    user_id: str | None = None
    items: tuple[str, ...] = ()
    listing: tuple[tuple[str, ...], ...] = ()
    """A `stream` row's answer: the code tokens of each listed item (`completion` is then their text)."""


def load_templates() -> dict[str, list[str]]:
    """The paraphrases of every template kind in `prompts/sft_tasks.yaml`, placeholders checked."""
    return load_prompts(PROMPT_FILE, TEMPLATE_PLACEHOLDERS)


class TaskBuilder:
    """Renders the examples of each task from a dataset and its code tables, paraphrases drawn from `seed`."""

    def __init__(
        self,
        dataset: Dataset,
        item_codes: Mapping[str, Sequence[str]],
        user_codes: Mapping[str, Sequence[str]],
        *,
        with_user_scid: bool = True,
        seed: int = 0,
        templates: Mapping[str, list[str]] | None = None,
        seq_format: str = "prompt",
        stream_stride: int | None = None,
        holdout: int = 0,
    ):
        check_seq_format(seq_format)
        if with_user_scid and not user_codes:
            raise ConfigError("with_user_scid=True needs user codes, but user_codes.json is empty (item-only SCIDs)")
        self.dataset = dataset
        self.item_codes = item_codes
        self.user_codes = user_codes
        self.with_user_scid = with_user_scid
        self.seed = seed
        self.templates = dict(templates or load_templates())
        self.seq_format = seq_format
        self.seq_kind = SEQ_FORMATS[seq_format]
        self.stream_stride = stream_stride or dataset.max_history
        if seq_format == "stream" and self.stream_stride > dataset.max_history + 1:
            raise ConfigError(
                f"stream_stride={self.stream_stride}: must be at most max_history + 1 = {dataset.max_history + 1} "
                "(the windows' width), or the items between two windows would never be targets"
            )
        self.holdout = holdout
        self.builders: dict[str, Callable[[], Iterator[SFTExample]]] = {
            "seq": self.seq,
            "item_align": self.item_align,
            "user_align": self.user_align,
            "asym_title": self.asym_title,
            "asym_item": self.asym_item,
            "intention": self.intention,
            "preference": self.preference,
        }

    def item(self, item_id: str) -> str:
        return "".join(self.item_codes[item_id])

    def train_items(self, user_id: str) -> list[str]:
        """The user's training items the tasks may use: all but the last `holdout`."""
        return self.dataset.train_items(user_id, self.holdout)

    def train_examples(self) -> list[Example]:
        """Every prefix of each user's `train_items` predicting its next item."""
        return self.dataset.examples("train", holdout=self.holdout)

    def user(self, user_id: str) -> str:
        return "".join(self.user_codes[user_id])

    def user_ref(self, user_id: str) -> str:
        """How prompts name the user: 'user <ua_..>..' with user SCIDs on, 'the user' with them off."""
        return f"user {self.user(user_id)}" if self.with_user_scid else ANONYMOUS_USER

    def history(self, items: Sequence[str]) -> str:
        return ", ".join(self.item(i) for i in items)

    def titles(self, items: Sequence[str]) -> str:
        return ", ".join(f'"{self.dataset.items[i].title}"' for i in items)

    def render(self, kind: str, rng: random.Random, **values: str) -> str:
        return rng.choice(self.templates[kind]).format(**values)

    def rng(self, kind: str) -> random.Random:
        return random.Random(f"{self.seed}:{kind}")

    def paraphrase(self, kind: str, index: int) -> str:
        """Template number `index` of `kind`, or a ConfigError naming the templates there are."""
        templates = self.templates[kind]
        if not 0 <= index < len(templates):
            raise ConfigError(f"paraphrase={index}: the {kind} task has templates 0..{len(templates) - 1}")
        return templates[index]

    def seq_prompt(self, user_id: str, history: Sequence[str], template: str) -> str:
        """The task-A prompt text of a user's history in `template` (one of the `prompt`-form paraphrases)."""
        return template.format(user=self.user_ref(user_id), history=self.history(history))

    def seq_prompt_ids(self, tokenizer, user_id: str, history: Sequence[str], template: str | None = None) -> list[int]:
        """The token IDs a model reads before predicting the item after `history`, in this builder's task-A form
        (`template`: one of the form's paraphrases; default the first, as evaluation uses)."""
        template = self.paraphrase(self.seq_kind, 0) if template is None else template
        if self.seq_format == "prompt":
            return encode_prompt(tokenizer, self.seq_prompt(user_id, history, template))
        listing, _ = encode_listing(tokenizer, [self.item_codes[i] for i in history])
        return encode_prompt(tokenizer, template.format(user=self.user_ref(user_id))) + listing

    def seq_answer_ids(self, tokenizer, item_id: str) -> list[int]:
        """The token IDs of `item_id` as the task-A answer: its SCID and EOS (`prompt`) or its SCID (`stream`)."""
        if self.seq_format == "prompt":
            return encode_completion(tokenizer, self.item(item_id))
        return code_ids(tokenizer, self.item_codes[item_id])

    def seq(self) -> Iterator[SFTExample]:
        rng = self.rng("seq")
        if self.seq_format == "stream":
            yield from self.seq_stream(rng)
            return
        for ex in self.train_examples():
            prompt = self.seq_prompt(ex.user_id, ex.history, rng.choice(self.templates["seq"]))
            yield SFTExample("seq", prompt, self.item(ex.target), ex.user_id, (*ex.history, ex.target))

    def seq_stream(self, rng: random.Random) -> Iterator[SFTExample]:
        """Windows of up to `max_history + 1` training items, cut from the end of each user's training part every
        `stream_stride` items, so every training item is a target with up to `max_history` items before it."""
        width = self.dataset.max_history + 1
        for user_id in self.dataset.sequences:
            train = self.train_items(user_id)
            for end in range(len(train), 0, -self.stream_stride):
                window = tuple(train[max(0, end - width) : end])
                prompt = rng.choice(self.templates["seq_stream"]).format(user=self.user_ref(user_id))
                listing = tuple(tuple(self.item_codes[i]) for i in window)
                yield SFTExample("seq", prompt, self.history(window), user_id, window, listing)
                if end <= width:
                    break

    def item_align(self) -> Iterator[SFTExample]:
        rngs = {kind: self.rng(kind) for kind in ("title_to_item", "description_to_item", "item_to_title")}
        for item_id, item in self.dataset.items.items():
            code = self.item(item_id)
            yield SFTExample("item_align", self.render("title_to_item", rngs["title_to_item"], title=item.title), code)
            if item.description:
                prompt = self.render("description_to_item", rngs["description_to_item"], description=item.description)
                yield SFTExample("item_align", prompt, code)
            yield SFTExample("item_align", self.render("item_to_title", rngs["item_to_title"], item=code), item.title)

    def user_align(self) -> Iterator[SFTExample]:
        if not self.user_codes:
            raise ConfigError("task user_align (B2) needs user codes, but user_codes.json is empty")
        rngs = {kind: self.rng(kind) for kind in ("profile_to_user", "user_to_profile")}
        for user_id in self.dataset.sequences:
            profile = self.dataset.users[user_id].profile
            if not profile:
                continue
            code = self.user(user_id)
            prompt = self.render("profile_to_user", rngs["profile_to_user"], profile=profile)
            yield SFTExample("user_align", prompt, code, user_id)
            prompt = self.render("user_to_profile", rngs["user_to_profile"], user=code)
            yield SFTExample("user_align", prompt, profile, user_id)

    def asym_title(self) -> Iterator[SFTExample]:
        rng = self.rng("scid_history_to_title")
        for ex in self.train_examples():
            prompt = self.render(
                "scid_history_to_title", rng, user=self.user_ref(ex.user_id), history=self.history(ex.history)
            )
            completion = self.dataset.items[ex.target].title
            yield SFTExample("asym_title", prompt, completion, ex.user_id, (*ex.history, ex.target))

    def asym_item(self) -> Iterator[SFTExample]:
        rng = self.rng("title_history_to_item")
        for ex in self.train_examples():
            prompt = self.render(
                "title_history_to_item", rng, user=self.user_ref(ex.user_id), titles=self.titles(ex.history)
            )
            yield SFTExample("asym_item", prompt, self.item(ex.target), ex.user_id, (*ex.history, ex.target))

    def intention(self) -> Iterator[SFTExample]:
        rng = self.rng("intention")
        train = {user_id: set(self.train_items(user_id)) for user_id in self.dataset.sequences}
        for row in self.dataset.intentions:
            user_id, item_id = row["user_id"], row["item_id"]
            if item_id not in train.get(user_id, ()):
                continue
            prompt = self.render("intention", rng, user=self.user_ref(user_id), query=row["query"])
            yield SFTExample("intention", prompt, self.item(item_id), user_id, (item_id,))

    def preference(self) -> Iterator[SFTExample]:
        rng = self.rng("preference")
        limit = self.dataset.max_history
        for user_id, statement in self.dataset.preferences.items():
            history = tuple(self.train_items(user_id)[-limit:])
            prompt = self.render("preference", rng, user=self.user_ref(user_id), titles=self.titles(history))
            yield SFTExample("preference", prompt, statement, user_id, history)

    def build(self, tasks: Sequence[str]) -> list[SFTExample]:
        """The examples of `tasks`, task by task in the order given (the trainer shuffles)."""
        check_tasks(tasks)
        return [example for task in tasks for example in self.builders[task]()]


def check_seq_format(seq_format: str) -> None:
    """A ConfigError for an unknown form of task A."""
    if seq_format not in SEQ_FORMATS:
        raise ConfigError(f"seq_format={seq_format!r}: expected one of {', '.join(SEQ_FORMATS)}")


def check_tasks(tasks: Sequence[str]) -> None:
    """A ConfigError for an empty mixture or an unknown task name."""
    if not tasks:
        raise ConfigError(f"tasks is empty: choose at least one of {', '.join(TASKS)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"unknown task {unknown[0]!r} in tasks; known tasks: {', '.join(TASKS)}")


def trained_prompting(model_dir: Path) -> tuple[bool, str]:
    """How the SFT run behind `model_dir` put task A (its meta.json): whether prompts hold user SCIDs, and the
    `seq_format`; (True, "prompt") when unrecorded."""
    meta = model_dir / "meta.json"
    config = read_json(meta).get("config", {}) if meta.is_file() else {}
    return bool(config.get("with_user_scid", True)), str(config.get("seq_format", "prompt"))


def evaluation_prompts(
    dataset: Dataset,
    item_codes: Mapping[str, Sequence[str]],
    user_codes: Mapping[str, Sequence[str]],
    split: Split,
    tokenizer,
    *,
    with_user_scid: bool = True,
    seq_format: str = "prompt",
    paraphrase: int = 0,
) -> list[tuple[Example, list[int]]]:
    """Per user of `split` ("valid" or "test"), the task-A prompt IDs of the user's history (paraphrase number
    `paraphrase` of the form's templates); the expected answer is the target's SCID."""
    if split not in ("valid", "test"):
        raise ConfigError(f"split={split!r}: evaluation prompts are for 'valid' or 'test'")
    builder = TaskBuilder(dataset, item_codes, user_codes, with_user_scid=with_user_scid, seq_format=seq_format)
    template = builder.paraphrase(builder.seq_kind, paraphrase)
    return [(ex, builder.seq_prompt_ids(tokenizer, ex.user_id, ex.history, template)) for ex in dataset.examples(split)]
