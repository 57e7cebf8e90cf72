"""Self-play generation of SP-DPO: the current policy's constrained beam search over the training prompts.

The prompts are split across the processes of an `accelerate launch` as the evaluation splits users (same
batches whatever the number of processes) and the candidates gathered, so every process builds the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from align3gr.decode import build_decoder
from align3gr.decode.trie import trie_for_model
from align3gr.sft.prompting import encode_prompt
from align3gr.sft.tasks import TaskBuilder


def generate_candidates(
    policy,
    tokenizer,
    builder: TaskBuilder,
    item_codes: Mapping[str, Sequence[str]],
    prompts: Sequence[tuple[str, tuple[str, ...], str]],
    beam_size: int,
    batch_size: int,
) -> list[list[str]]:
    """For each (user, history, target), the items the policy ranks first for the task-A prompt (paraphrase 0,
    as in evaluation), best first, `beam_size` at most."""
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from align3gr.evaluate.stage import shard_order

    state = PartialState()
    ids = [encode_prompt(tokenizer, builder.seq_prompt(user, history)) for user, history, _ in prompts]
    was_training = policy.training
    policy.eval()
    decoder = build_decoder("beam_search", policy, tokenizer, trie_for_model(item_codes, tokenizer, policy),
                            beam_size, batch_size)  # fmt: skip
    mine = shard_order([len(p) for p in ids], batch_size, state.process_index, state.num_processes)
    with tqdm(total=len(mine), unit="prompt", desc="self-play", disable=not state.is_main_process) as bar:
        ranked = decoder.recommend([ids[i] for i in mine], progress=bar.update)
    results = list(zip(mine, [r.items for r in ranked], strict=True))
    if state.num_processes > 1:
        results = gather_object(results)
    policy.train(was_training)
    by_index = dict(results)
    return [by_index[i] for i in range(len(prompts))]
