"""A few users' free-text answers (Align3GR Figure 3 tasks C1-1, next item title, and C3, preference statement),
generated greedily next to the reference, since a user wants to look at what the model says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from align3gr.data.dataset import Dataset
from align3gr.decode.text import generate_text
from align3gr.sft.prompting import encode_prompt
from align3gr.sft.tasks import TaskBuilder


def text_examples(
    model,
    tokenizer,
    dataset: Dataset,
    item_codes: Mapping[str, Sequence[str]],
    user_codes: Mapping[str, Sequence[str]],
    split: str,
    users: int,
    *,
    with_user_scid: bool = True,
    max_new_tokens: int = 48,
) -> list[dict[str, str]]:
    """For the first `users` users of `split`: `{user_id, task, prompt, generated, reference}` rows, one per
    task (the preference task only for users with a written statement)."""
    builder = TaskBuilder(dataset, item_codes, user_codes, with_user_scid=with_user_scid)
    rows: list[dict[str, str]] = []
    for example in dataset.examples(split)[:users]:
        user = builder.user_ref(example.user_id)
        rows.append(
            {
                "user_id": example.user_id,
                "task": "next title (C1-1)",
                "prompt": builder.templates["scid_history_to_title"][0].format(
                    user=user, history=builder.history(example.history)
                ),
                "reference": dataset.items[example.target].title,
            }
        )
        if example.user_id in dataset.preferences:
            rows.append(
                {
                    "user_id": example.user_id,
                    "task": "preference (C3)",
                    "prompt": builder.templates["preference"][0].format(
                        user=user, titles=builder.titles(example.history)
                    ),
                    "reference": dataset.preferences[example.user_id],
                }
            )
    if rows:
        generated = generate_text(
            model, tokenizer, [encode_prompt(tokenizer, r["prompt"]) for r in rows], max_new_tokens
        )
        for row, text in zip(rows, generated, strict=True):
            row["generated"] = text
    return rows
