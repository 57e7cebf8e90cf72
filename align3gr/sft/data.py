"""The SFT examples as TRL's pre-tokenized prompt/completion rows: `input_ids` and `completion_mask`.

Prompts and answers are encoded with `align3gr.sft.prompting`, the functions decoding uses, so training and
inference see the same prompt tokens; the trainer puts the loss on the answer tokens only.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from tqdm.auto import tqdm

from align3gr.sft.prompting import encode_completion, encode_prompt
from align3gr.sft.tasks import SFTExample

log = logging.getLogger(__name__)


def sample_per_task(examples: Sequence[SFTExample], limit: int | None, seed: int) -> list[SFTExample]:
    """At most `limit` examples of each task, a seeded sample kept in the original order."""
    if limit is None:
        return list(examples)
    by_task: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        by_task.setdefault(example.task, []).append(index)
    rng = random.Random(seed)
    keep = {
        i for indices in by_task.values() for i in (rng.sample(indices, limit) if len(indices) > limit else indices)
    }
    return [example for index, example in enumerate(examples) if index in keep]


def tokenize_examples(examples: Sequence[SFTExample], tokenizer, max_length: int, desc: str = "Tokenizing"):
    """A `datasets.Dataset` with `input_ids` and `completion_mask`; examples longer than `max_length`
    are left out (and counted in the log) rather than cut, which would drop the answer or the template."""
    from datasets import Dataset

    rows: dict[str, list] = {"input_ids": [], "completion_mask": []}
    too_long = 0
    for example in tqdm(examples, desc=desc, unit="ex", mininterval=2.0, leave=False):
        prompt = encode_prompt(tokenizer, example.prompt)
        answer = encode_completion(tokenizer, example.completion)
        if len(prompt) + len(answer) > max_length:
            too_long += 1
            continue
        rows["input_ids"].append(prompt + answer)
        rows["completion_mask"].append([0] * len(prompt) + [1] * len(answer))
    if too_long:
        log.warning(
            "%d of %d examples are longer than max_length=%d and were left out", too_long, len(examples), max_length
        )
    return Dataset.from_dict(rows)
