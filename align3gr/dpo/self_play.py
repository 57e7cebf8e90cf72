"""Self-play generation of SP-DPO: the current policy's constrained beam search over the training prompts.

The prompts are split across the processes of an `accelerate launch` as evaluation splits users
(`align3gr.decode.sharded`) and the candidates gathered, so every process builds the same rows. History items are
not excluded (evaluation excludes them by default): candidates are the policy's own top list, and a history item it
ranks high is a mistake worth rejecting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from align3gr.decode import build_decoder
from align3gr.decode.sharded import recommend_sharded
from align3gr.decode.trie import trie_for_model
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
    ids = [builder.seq_prompt_ids(tokenizer, user, history) for user, history, _ in prompts]
    was_training = policy.training
    policy.eval()
    trie = trie_for_model(item_codes, tokenizer, policy)
    decoder = build_decoder("beam_search", policy, tokenizer, trie, beam_size, batch_size)
    ranked = recommend_sharded(decoder, ids, "self-play", "prompt")
    policy.train(was_training)
    return [r.items for r in ranked]
