"""The policy's own candidates for the DPO stages: its constrained beam search over the training prompts.

SP-DPO rejects them by difficulty bucket; RF-DPO keeps those the user logged a feedback level for. The prompts are
split across the processes of an `accelerate launch` as evaluation splits users (`align3gr.decode.sharded`) and the
candidates gathered, so every process builds the same rows. History items are not excluded (evaluation excludes
them by default): candidates are the policy's own top list, a disliked or neutral history item it ranks high is a
mistake worth rejecting, and the rows leave out the user's positives (`preferences.training_positives`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from align3gr.decode.sharded import rank_catalogue
from align3gr.sft.tasks import TaskBuilder


def generate_candidates(
    policy,
    tokenizer,
    builder: TaskBuilder,
    item_codes: Mapping[str, Sequence[str]],
    prompts: Sequence[tuple],
    beam_size: int,
    batch_size: int,
) -> list[list[str]]:
    """For each prompt, a tuple that starts with (user, history), the items the policy ranks first for the task-A
    prompt (paraphrase 0, as in evaluation), best first, `beam_size` at most."""
    ids = [builder.seq_prompt_ids(tokenizer, prompt[0], prompt[1]) for prompt in prompts]
    ranked = rank_catalogue(policy, tokenizer, item_codes, ids, "candidates", "prompt", beam_size=beam_size,
                            batch_size=batch_size)  # fmt: skip
    return [r.items for r in ranked]
