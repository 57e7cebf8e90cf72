"""The SFT examples as TRL's pre-tokenized prompt/completion rows: `input_ids` and `completion_mask`.

Prompts and answers are encoded with `align3gr.sft.prompting`, the functions decoding uses, so training and
inference see the same prompt tokens; the trainer puts the loss on the answer tokens only (on the code tokens of
every listed item for a `stream` row). `TaskMixture` streams the sampled task mixture; `encode_examples` tokenizes in
batches (`encode_example`, one at a time, is the reference it matches token for token); `cached_rows` streams the rows
into a file under a key of everything they depend on, so a resumed run loads them; `trainer_rows` makes them what
TRL's dataset preparation would, without its per-row passes.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from align3gr.data.dataset import kept_positions
from align3gr.io import atomic_directory, sha256_file, sha256_json
from align3gr.sft.batch_encoding import BatchEncoder
from align3gr.sft.prompting import (
    LISTING_SEPARATOR,
    PLAIN_SEPARATOR,
    encode_completion,
    encode_listing,
    encode_listings,
    encode_prompt,
)
from align3gr.sft.ragged import Ragged, joined, stacked
from align3gr.sft.tasks import SFTExample, TaskBuilder, check_tasks

log = logging.getLogger(__name__)
BATCH = 4096
"""Examples per tokenizer call: large enough that the per-call cost vanishes, small enough to show progress."""
ROWS_FORMAT = 2
"""Version of the rows `encode_examples` makes and of their file, part of the cache key: bump it when they change."""
ROWS_FILE = "rows.arrow"
"""The file of a cached mixture's rows, in its key's folder."""


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


class TaskMixture:
    """The SFT task mixture, `sample_per_task(builder.build(tasks), limit, seed, limits)` (the same examples in the
    same order), as a stream that can be read again: each pass rebuilds the examples task by task and holds none
    of them, so a catalogue-sized mixture never sits in memory. A capped task is counted once here, to draw its
    sample; `counts` holds the examples per task once a pass has ended (a task named twice builds twice)."""

    def __init__(
        self,
        builder: TaskBuilder,
        tasks: Sequence[str],
        limit: int | None,
        seed: int,
        limits: Mapping[str, int | None] | None = None,
    ) -> None:
        check_tasks(tasks)
        self.builder, self.tasks = builder, list(tasks)
        self.counts: dict[str, int] = {}
        rng = random.Random(seed)
        self._sizes: dict[str, int] = {}
        self._kept: dict[str, Sequence[int]] = {}
        for task in dict.fromkeys(tasks):
            cap = (limits or {}).get(task, limit)
            if cap is not None:
                self._sizes[task] = sum(1 for _ in builder.builders[task]())
                kept = kept_positions(self._sizes[task] * self.tasks.count(task), cap, rng)
                if not isinstance(kept, range):  # a range keeps every example
                    self._kept[task] = kept

    def __iter__(self) -> Iterator[SFTExample]:
        counts = dict.fromkeys(self.tasks, 0)
        for slot, task in enumerate(self.tasks):
            examples = self.builder.builders[task]()
            if task in self._kept:
                size, repeat = self._sizes[task], self.tasks[:slot].count(task)
                wanted = [p - repeat * size for p in self._kept[task] if repeat * size <= p < (repeat + 1) * size]
                examples = _at(examples, wanted)
            for example in examples:
                counts[task] += 1
                yield example
        self.counts = {task: count for task, count in counts.items() if count}


def _at(iterable: Iterable[SFTExample], positions: Sequence[int]) -> Iterator[SFTExample]:
    """The elements of `iterable` at the ascending `positions`."""
    wanted = iter(positions)
    target = next(wanted, None)
    for index, element in enumerate(iterable):
        if index == target:
            yield element
            target = next(wanted, None)
            if target is None:
                return


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


def encode_batch(examples: Sequence[SFTExample], encoder: BatchEncoder) -> Ragged:
    """`encode_example` of each example as rows of (token ID, completion mask) pairs: the prompts and the answers
    each encoded together (`BatchEncoder`), then joined row by row."""
    prompts = encoder.prompts([e.prompt for e in examples]).paired(0)
    plain = [index for index, e in enumerate(examples) if not e.listing]
    listed = [index for index, e in enumerate(examples) if e.listing]
    completions = encoder.completions([examples[index].completion for index in plain]).paired(1)
    listings = pair_rows(encode_listings(encoder.tokenizer, [examples[index].listing for index in listed]))
    answers = stacked([completions, listings]).take(np.argsort(np.array(plain + listed, np.int64)))
    return joined([prompts, answers])


def pair_rows(pairs: Iterable[tuple[list[int], list[int]]]) -> Ragged:
    """`(input_ids, completion_mask)` pairs as rows of (token ID, mask) pairs."""
    pairs = list(pairs)
    return Ragged.from_lists([ids for ids, _ in pairs]).paired(Ragged.from_lists([mask for _, mask in pairs]))


def encoded_batches(examples: Iterable[SFTExample], tokenizer, total: int | None = None, desc: str = "Tokenizing"):
    """`encode_batch` of the examples, `BATCH` at a time, read as a stream; `total` sizes the progress bar."""
    iterator, encoder = iter(examples), BatchEncoder(tokenizer)
    with tqdm(total=total, desc=desc, unit="example", mininterval=2.0, leave=False) as bar:
        while batch := list(itertools.islice(iterator, BATCH)):
            yield encode_batch(batch, encoder)
            bar.update(len(batch))


def fitting(batches: Iterable[Ragged], max_length: int) -> Iterator[Ragged]:
    """The rows no longer than `max_length`; the others are left out (and counted in the log) rather than cut,
    which would drop the answer or the template."""
    total = too_long = 0
    for rows in batches:
        keep = rows.lengths <= max_length
        total += len(rows)
        too_long += len(rows) - int(keep.sum())
        yield rows if keep.all() else rows.take(keep)
    if too_long:
        log.warning("%d of %d examples are longer than max_length=%d and were left out", too_long, total, max_length)


def encode_examples(examples: Sequence[SFTExample], tokenizer, max_length: int, desc: str = "Tokenizing"):
    """The examples encoded with the LLM's tokenizer (as `encode_example`, in batches) as an in-memory
    `datasets.Dataset` with `input_ids` and `completion_mask`, those longer than `max_length` left out."""
    return _dataset(encoded_batches(examples, tokenizer, len(examples), desc), max_length)


def rows_dataset(pairs: Iterable[tuple[list[int], list[int]]], max_length: int):
    """A `datasets.Dataset` of `(input_ids, completion_mask)` pairs, those longer than `max_length` left out."""
    return _dataset([pair_rows(pairs)], max_length)


def _dataset(batches: Iterable[Ragged], max_length: int):
    """The fitting rows of `batches` as an in-memory `datasets.Dataset`."""
    import pyarrow as pa
    from datasets import Dataset

    return Dataset(pa.Table.from_batches([_record_batch(rows) for rows in fitting(batches, max_length)], _schema()))


def write_rows(batches: Iterable[Ragged], max_length: int, path: Path) -> None:
    """The fitting rows of `batches` streamed into an Arrow file (the IPC stream format `datasets` memory-maps), a
    batch at a time, so memory holds one batch whatever the mixture's size."""
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, _schema()) as writer:
        for rows in fitting(batches, max_length):
            writer.write_batch(_record_batch(rows))


def _schema():
    """The rows' Arrow types, those `datasets` infers for them: `input_ids` lists of int32 (its type for token
    IDs), `completion_mask` lists of int64."""
    import pyarrow as pa

    return pa.schema([("input_ids", pa.list_(pa.int32())), ("completion_mask", pa.list_(pa.int64()))])


def _record_batch(rows: Ragged):
    """Rows of (token ID, mask) pairs as an Arrow record batch of `_schema()`."""
    import pyarrow as pa

    offsets = pa.array(np.concatenate([[0], np.cumsum(rows.lengths)]).astype(np.int32))
    ids = pa.ListArray.from_arrays(offsets, pa.array(rows.values[:, 0].astype(np.int32)))
    masks = pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(rows.values[:, 1])))
    return pa.record_batch([ids, masks], schema=_schema())


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of what a tokenizer encodes text with: its whole state (the fast tokenizer's JSON: vocabulary, merges,
    added tokens, normalizer; a tokenizer without one: its vocabulary, its options and the contents of its files),
    its chat template and the special tokens the rows use."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = backend.to_str() if backend is not None else sha256_json(slow_tokenizer_state(tokenizer))
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


def slow_tokenizer_state(tokenizer) -> dict:
    """What a tokenizer without a fast backend encodes with: its vocabulary, its options (`do_lower_case`, ...) and
    the sha256 of the files it was made from (a SentencePiece model's merges are not in its vocabulary)."""
    options = tokenizer.init_kwargs
    files = {k: v for k, v in options.items() if k.endswith("_file") and isinstance(v, str) and Path(v).is_file()}
    return {
        "vocabulary": tokenizer.get_vocab(),
        "options": {k: str(v) for k, v in sorted(options.items()) if not k.endswith("_file")},
        "files": {k: sha256_file(Path(v)) for k, v in sorted(files.items())},
    }


def rows_key(examples: Iterable[SFTExample], tokenizer, max_length: int) -> str:
    """Hash of everything `encode_examples` rows depend on: the examples in order, the tokenizer, the separators of
    the prompt template, `max_length` and `ROWS_FORMAT`."""
    return _digest(examples, tokenizer, max_length)[0]


def _digest(examples: Iterable[SFTExample], tokenizer, max_length: int) -> tuple[str, int]:
    """(`rows_key`, number of examples), in one pass over the examples."""
    digest = hashlib.sha256()
    settings = [ROWS_FORMAT, tokenizer_fingerprint(tokenizer), PLAIN_SEPARATOR, LISTING_SEPARATOR, max_length]
    digest.update(sha256_json(settings).encode())
    count = 0
    for example in examples:
        digest.update(repr((example.prompt, example.completion, example.listing)).encode())
        count += 1
    return digest.hexdigest(), count


def cached_rows(
    examples: Iterable[SFTExample], tokenizer, max_length: int, folder: str | Path, desc: str = "Tokenizing"
):
    """The rows of `examples` (a list, or a stream read twice such as `TaskMixture`), kept as `folder/KEY/ROWS_FILE`
    (`rows_key`): memory-mapped from there when present, else tokenized in batches straight into that file and
    renamed into place whole (a killed run leaves only a temporary that the next write removes), replacing the
    rows of any other key."""
    from datasets import Dataset

    folder = Path(folder)
    key, count = _digest(examples, tokenizer, max_length)
    target = folder / key
    if (target / ROWS_FILE).is_file():
        rows = Dataset.from_file(str(target / ROWS_FILE))
        log.info("%s: loaded %d tokenized rows from %s (same examples, tokenizer, max_length)", desc, len(rows), target)
        return rows
    with atomic_directory(target) as tmp:
        write_rows(encoded_batches(examples, tokenizer, count, desc), max_length, tmp / ROWS_FILE)
    for other in folder.iterdir():
        if other.is_dir() and not other.name.startswith(".") and other.name != key:
            shutil.rmtree(other, ignore_errors=True)
    rows = Dataset.from_file(str(target / ROWS_FILE))
    log.info("%s: tokenized %d examples into %d rows, saved in %s", desc, count, len(rows), target)
    return rows


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
