"""The SFT examples as TRL's pre-tokenized prompt/completion rows: `input_ids` and `completion_mask`.

Prompts and answers are encoded with `align3gr.sft.prompting`, the functions decoding uses, so training and
inference see the same prompt tokens; the trainer puts the loss on the answer tokens only (on the code tokens of
every listed item for a `stream` row). `encode_examples` tokenizes in batches (`encode_example`, one at a time, is the
reference it matches token for token); `cached_rows` keeps its rows on disk under a key of everything they depend on,
so a resumed run loads them; `trainer_rows` makes them what TRL's dataset preparation would, without its per-row passes.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from align3gr.io import atomic_directory, sha256_json
from align3gr.sft.prompting import (
    LISTING_SEPARATOR,
    PLAIN_SEPARATOR,
    encode_completion,
    encode_completions,
    encode_listing,
    encode_listings,
    encode_prompt,
    encode_prompts,
)
from align3gr.sft.tasks import SFTExample, TaskBuilder, check_tasks

log = logging.getLogger(__name__)
BATCH = 4096
"""Examples per tokenizer call: large enough that the per-call cost vanishes, small enough to show progress."""
ROWS_FORMAT = 1
"""Version of the rows `encode_examples` makes, part of the cache key: bump it when they change."""


def kept_positions(size: int, cap: int | None, rng: random.Random) -> Sequence[int]:
    """The positions of a task's `size` examples that a cap of `cap` keeps (None: all): a seeded sample, ascending."""
    return sorted(rng.sample(range(size), cap)) if cap is not None and size > cap else range(size)


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
        keep.update(indices[k] for k in kept_positions(len(indices), (limits or {}).get(task, limit), rng))
    return [example for index, example in enumerate(examples) if index in keep]


def sampled_examples(
    builder: TaskBuilder,
    tasks: Sequence[str],
    limit: int | None,
    seed: int,
    limits: Mapping[str, int | None] | None = None,
) -> list[SFTExample]:
    """`sample_per_task(builder.build(tasks), limit, seed, limits)`, the same examples in the same order, holding
    only one task's examples besides those kept (a task named twice builds the same examples twice)."""
    check_tasks(tasks)
    rng = random.Random(seed)
    chosen: list[list[SFTExample]] = [[] for _ in tasks]
    for task in dict.fromkeys(tasks):
        block = list(builder.builders[task]())
        slots = [k for k, name in enumerate(tasks) if name == task]
        for position in kept_positions(len(block) * len(slots), (limits or {}).get(task, limit), rng):
            chosen[slots[position // len(block)]].append(block[position % len(block)])
    return [example for examples in chosen for example in examples]


def encode_example(example: SFTExample, tokenizer) -> tuple[list[int], list[int]]:
    """`(input_ids, completion_mask)` of one example: prompt then answer, or prompt then listing (the reference
    `encode_examples` matches)."""
    prompt = encode_prompt(tokenizer, example.prompt)
    if example.listing:
        answer, mask = encode_listing(tokenizer, example.listing)
    else:
        answer = encode_completion(tokenizer, example.completion)
        mask = [1] * len(answer)
    return prompt + answer, [0] * len(prompt) + mask


def encode_batch(examples: Sequence[SFTExample], tokenizer) -> Iterator[tuple[list[int], list[int]]]:
    """`encode_example` of each example, with one tokenizer call for the prompts and one for the answers."""
    prompts = encode_prompts(tokenizer, [e.prompt for e in examples])
    answers = iter(encode_completions(tokenizer, [e.completion for e in examples if not e.listing]))
    listings = iter(encode_listings(tokenizer, [e.listing for e in examples if e.listing]))
    for example, prompt in zip(examples, prompts, strict=True):
        if example.listing:
            answer, mask = next(listings)
        else:
            answer = next(answers)
            mask = [1] * len(answer)
        yield prompt + answer, [0] * len(prompt) + mask


def encode_examples(examples: Sequence[SFTExample], tokenizer, max_length: int, desc: str = "Tokenizing"):
    """The examples encoded with the LLM's tokenizer (as `encode_example`, `BATCH` at a time) as a
    `datasets.Dataset` with `input_ids` and `completion_mask`; those longer than `max_length` are left out (and
    counted in the log) rather than cut, which would drop the answer or the template."""
    batches = tqdm(range(0, len(examples), BATCH), desc=desc, unit="batch", mininterval=2.0, leave=False)
    pairs = (pair for start in batches for pair in encode_batch(examples[start : start + BATCH], tokenizer))
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


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of what a tokenizer encodes text with: its whole state (the fast tokenizer's JSON: vocabulary, merges,
    added tokens, normalizer), its chat template and the special tokens the rows use."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = backend.to_str() if backend is not None else sha256_json(tokenizer.get_vocab())
    return sha256_json(
        {
            "class": type(tokenizer).__name__,
            "state": hashlib.sha256(state.encode()).hexdigest(),
            "added": {i: str(token) for i, token in tokenizer.added_tokens_decoder.items()},
            "chat_template": getattr(tokenizer, "chat_template", None),
            "special": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id],
            "split_special_tokens": getattr(tokenizer, "split_special_tokens", False),
        }
    )


def rows_key(examples: Sequence[SFTExample], tokenizer, max_length: int) -> str:
    """Hash of everything `encode_examples` rows depend on: the examples in order, the tokenizer, the separators of
    the prompt template, `max_length` and `ROWS_FORMAT`."""
    digest = hashlib.sha256()
    settings = [ROWS_FORMAT, tokenizer_fingerprint(tokenizer), PLAIN_SEPARATOR, LISTING_SEPARATOR, max_length]
    digest.update(sha256_json(settings).encode())
    for example in examples:
        digest.update(repr((example.prompt, example.completion, example.listing)).encode())
    return digest.hexdigest()


def cached_rows(
    examples: Sequence[SFTExample], tokenizer, max_length: int, folder: str | Path, desc: str = "Tokenizing"
):
    """`encode_examples`, kept as `folder/KEY` (`rows_key`): loaded from there when present, else tokenized and
    written in one rename (a killed run leaves only a temporary that the next write removes), replacing the rows of
    any other key. The rows come back memory-mapped from disk either way."""
    from datasets import Dataset

    folder = Path(folder)
    key = rows_key(examples, tokenizer, max_length)
    target = folder / key
    if target.is_dir():
        rows = Dataset.load_from_disk(str(target))
        log.info("%s: loaded %d tokenized rows from %s (same examples, tokenizer, max_length)", desc, len(rows), target)
        return rows
    rows = encode_examples(examples, tokenizer, max_length, desc)
    with atomic_directory(target) as tmp:
        rows.save_to_disk(str(tmp))
    for other in folder.iterdir():
        if other.is_dir() and not other.name.startswith(".") and other.name != key:
            shutil.rmtree(other, ignore_errors=True)
    log.info("%s: tokenized %d examples into %d rows, saved in %s", desc, len(examples), len(rows), target)
    return Dataset.load_from_disk(str(target))


def trainer_rows(rows, arguments, packing: bool):
    """What TRL's dataset preparation makes of `rows`, for a trainer given `skip_prepare_dataset`: `labels` (the
    token on the answers, -100 elsewhere, as TRL builds them from `completion_mask`), then TRL's packing and
    shuffling as `arguments` set them. TRL's other passes, a cut to `max_length` and a filter of rows left without
    an answer token, change nothing here: no row is longer than `max_length`, and none is cut."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    table = rows.with_format("arrow")[:]
    ids = table.column("input_ids").combine_chunks()
    mask = pc.list_flatten(table.column("completion_mask").combine_chunks())
    flat = pc.list_flatten(ids)
    labels = pc.if_else(pc.not_equal(mask, 0), flat, pa.scalar(-100, flat.type))
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(pc.list_value_length(ids))])
    labelled = pa.ListArray.from_arrays(offsets, labels)
    dataset = Dataset(pa.table({"input_ids": ids, "labels": labelled}))
    if packing:
        if arguments.shuffle_dataset:
            dataset = dataset.shuffle(seed=arguments.seed)
        dataset = pack_dataset(
            dataset, arguments.max_length, arguments.packing_strategy, {"num_proc": arguments.dataset_num_proc}
        )
    if arguments.shuffle_dataset:
        dataset = dataset.shuffle(seed=arguments.seed)
    return dataset
