"""Decoding many prompts across the processes of an `accelerate launch`: evaluation and self-play generation.

Prompts are sorted by length (less padding), cut into batches and the batches dealt round-robin, so every batch is
the one a single process would decode; the results are gathered in prompt order on every process, identical to a
single-process run. A model sharded by FSDP (the SFT probe's, during training) gathers its weights in every forward,
a collective: there the processes with a batch fewer decode one more, discarded, so that none waits forever.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch

from align3gr.decode import BEAM_SIZE, build_decoder
from align3gr.decode.base import Decoder, Ranked
from align3gr.decode.trie import trie_for_model


def shard_order(lengths: list[int], batch_size: int, process: int, processes: int) -> list[int]:
    """The prompt indices process `process` decodes: prompts sorted by length, cut into batches, batches dealt
    round-robin; every batch is the same whatever the number of processes."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return [i for batch in batches[process::processes] for i in batch]


def missing_batches(prompts: int, batch_size: int, process: int, processes: int) -> int:
    """How many batches fewer than the busiest process `process` decodes (`shard_order`): 0 or 1."""
    batches = -(-prompts // batch_size)
    return -(-batches // processes) - len(range(process, batches, processes))


def recommend_sharded(
    decoder: Decoder,
    prompts: Sequence[Sequence[int]],
    desc: str,
    unit: str,
    exclude: Sequence[Collection[str]] | None = None,
) -> list[Ranked]:
    """`decoder.recommend` over all `prompts` (without the items of `exclude[i]` for prompt i), this process's share
    decoded here (progress bar on the main process), every process's results gathered; returned in the order of
    `prompts` on every process."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, gather_object
    from tqdm.auto import tqdm

    state = PartialState()
    mine = shard_order([len(p) for p in prompts], decoder.batch_size, state.process_index, state.num_processes)
    with tqdm(total=len(mine), unit=unit, desc=desc, disable=not state.is_main_process) as bar:
        excluded = None if exclude is None else [exclude[i] for i in mine]
        ranked = decoder.recommend([prompts[i] for i in mine], progress=bar.update, exclude=excluded)
    if state.distributed_type == DistributedType.FSDP:  # every forward of a sharded model is a collective
        for _ in range(missing_batches(len(prompts), decoder.batch_size, state.process_index, state.num_processes)):
            decoder.recommend(prompts[: decoder.batch_size])  # as many forwards as the busiest process; discarded
    results = list(zip(mine, ranked, strict=True))
    if state.num_processes > 1:
        results = gather_object(results)
    by_index = dict(results)
    return [by_index[i] for i in range(len(prompts))]


def rank_catalogue(
    model,
    tokenizer,
    item_codes: Mapping[str, Sequence[str]],
    prompts: Sequence[Sequence[int]],
    desc: str,
    unit: str,
    *,
    decoder: str = "beam_search",
    beam_size: int = BEAM_SIZE,
    batch_size: int = 32,
    exclude: Sequence[Collection[str]] | None = None,
) -> list[Ranked]:
    """Every prompt's ranking of the catalogue by `model`, constrained to `item_codes` (`recommend_sharded` with the
    named decoder), in eval mode without gradients; the model is put back in the mode it was in. What evaluation,
    the SFT ranking probe and self-play generation share."""
    was_training = model.training
    model.eval()
    trie = trie_for_model(item_codes, tokenizer, model)
    search = build_decoder(decoder, model, tokenizer, trie, beam_size, batch_size)
    with torch.no_grad():
        ranked = recommend_sharded(search, prompts, desc, unit, exclude)
    model.train(was_training)
    return ranked
