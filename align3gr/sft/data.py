"""The SFT examples as TRL's pre-tokenized prompt/completion rows: `input_ids` and `completion_mask`.

Prompts and answers are encoded with `align3gr.sft.prompting`, the functions decoding uses, so training and
inference see the same prompt tokens; the trainer puts the loss on the answer tokens only (on the code tokens of
every listed item for a `stream` row).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence

from tqdm.auto import tqdm

from align3gr.sft.prompting import encode_completion, encode_listing, encode_prompt
from align3gr.sft.tasks import SFTExample

log = logging.getLogger(__name__)


def sample_per_task(
    examples: Sequence[SFTExample], limit: int | None, seed: int, limits: Mapping[str, int | None] | None = None
) -> list[SFTExample]:
    """At most `limit` examples of each task (`limits[task]` for the tasks it names; None: all), a seeded sample
    kept in the original order."""
    by_task: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        by_task.setdefault(example.task, []).append(index)
    rng = random.Random(seed)
    keep: set[int] = set()
    for task, indices in by_task.items():
        cap = (limits or {}).get(task, limit)
        keep.update(rng.sample(indices, cap) if cap is not None and len(indices) > cap else indices)
    return [example for index, example in enumerate(examples) if index in keep]


def encode_example(example: SFTExample, tokenizer) -> tuple[list[int], list[int]]:
    """`(input_ids, completion_mask)` of one example: prompt then answer, or prompt then listing."""
    prompt = encode_prompt(tokenizer, example.prompt)
    if example.listing:
        answer, mask = encode_listing(tokenizer, example.listing)
    else:
        answer = encode_completion(tokenizer, example.completion)
        mask = [1] * len(answer)
    return prompt + answer, [0] * len(prompt) + mask


def encode_examples(examples: Sequence[SFTExample], tokenizer, max_length: int, desc: str = "Tokenizing"):
    """The examples encoded with the LLM's tokenizer (`encode_example`) as a `datasets.Dataset` with `input_ids` and
    `completion_mask`; those longer than `max_length` are left out (and counted in the log) rather than cut, which
    would drop the answer or the template."""
    pairs = (encode_example(e, tokenizer) for e in tqdm(examples, desc=desc, unit="ex", mininterval=2.0, leave=False))
    return rows_dataset(pairs, max_length)


def rows_dataset(pairs: Iterable[tuple[list[int], list[int]]], max_length: int):
    """A `datasets.Dataset` of `(input_ids, completion_mask)` pairs, those longer than `max_length` left out."""
    from datasets import Dataset

    rows: dict[str, list] = {"input_ids": [], "completion_mask": []}
    total = too_long = 0
    for ids, mask in pairs:
        total += 1
        if len(ids) > max_length:
            too_long += 1
            continue
        rows["input_ids"].append(ids)
        rows["completion_mask"].append(mask)
    if too_long:
        log.warning("%d of %d examples are longer than max_length=%d and were left out", too_long, total, max_length)
    return Dataset.from_dict(rows)
