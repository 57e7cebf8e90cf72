"""Sequence log-probabilities of the 1 + K completions of each prompt, three ways that give the same numbers.

A completion is a few SCID tokens and a prompt up to hundreds, so running the prompt 1 + K times (`plain`) spends
nearly all the compute on copies of the same prompt. The shared-prompt forwards run it once:

- `packed`: one sequence per row, [prompt | completion 0 | ... | completion K], with a 4D attention mask under
  which each completion sees the prompt and its own earlier tokens only, and positions that restart after the
  prompt for every completion. One forward call, so it works with gradient checkpointing, DDP and ZeRO-3; it
  needs an attention implementation that takes a custom mask (sdpa or eager) and a model without a sliding window.
- `cache`: the prompt runs alone with `use_cache=True`, its KV cache is repeated for the 1 + K completions, which
  run on top of it. No custom mask (any attention implementation), but caching is off under gradient
  checkpointing, so it needs checkpointing off while training.

In all three the prompt's activations stay in the autograd graph, so gradients equal the plain forward's.
Each function takes a `SoftmaxPreferenceCollator` batch and returns log pi(completion | prompt) as [B, 1 + K].
Positions count from each prompt's first real token, so left padding changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from align3gr.errors import ConfigError
from align3gr.models.attention import (
    MASKED_ATTENTION,
    attention_implementation,
    model_attention_mask,
    sliding_attention,
    takes_custom_mask,
)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position IDs of left-padded rows: 0 at each row's first real token (padding gets 0 too)."""
    return (mask.long().cumsum(1) - 1).clamp_min(0)


def _gather(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the real tokens of log softmax(logits)[token]: logits [N, C, V] predict ids [N, C]."""
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return (logps * mask).sum(-1)


def _flat(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
    ids, mask = batch["completion_ids"], batch["completion_attention_mask"]
    rows, count, width = ids.shape
    return ids.reshape(rows * count, width), mask.reshape(rows * count, width), rows, count, width


def plain_completion_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, 1 + K] log-probabilities from 1 + K full sequences per prompt (only completion columns projected)."""
    prompt, prompt_mask = batch["prompt_ids"], batch["prompt_attention_mask"]
    flat_ids, flat_mask, rows, count, width = _flat(batch)
    prompt_len = prompt.shape[1]
    attention = torch.cat([prompt_mask.repeat_interleave(count, 0), flat_mask], 1)
    outputs = model(
        input_ids=torch.cat([prompt.repeat_interleave(count, 0), flat_ids], 1),
        attention_mask=attention,
        position_ids=_positions(attention),
        logits_to_keep=torch.arange(prompt_len - 1, prompt_len + width - 1, device=prompt.device),
        use_cache=False,
    )
    return _gather(outputs.logits, flat_ids, flat_mask).view(rows, count)


def packed_attention_mask(prompt_mask: torch.Tensor, count: int, width: int) -> torch.Tensor:
    """[B, 1, T, T] boolean mask (True: may attend) of the packed layout, T = P + count * width: the prompt is
    causal over its real tokens; completion n sees the real prompt tokens and its own earlier tokens. Every query
    sees at least itself, so no softmax row is empty."""
    rows, prompt_len = prompt_mask.shape
    total = prompt_len + count * width
    device = prompt_mask.device
    index = torch.arange(total, device=device)
    block = torch.cat([torch.full((prompt_len,), -1, device=device), index[: count * width] // width])
    causal = index.unsqueeze(1) >= index.unsqueeze(0)
    same_block = block.unsqueeze(1) == block.unsqueeze(0)
    key_is_prompt = (block == -1).unsqueeze(0)
    real_key = torch.cat([prompt_mask.bool(), torch.ones(rows, count * width, dtype=torch.bool, device=device)], 1)
    allowed = causal & (same_block | key_is_prompt)
    mask = allowed.unsqueeze(0) & real_key.unsqueeze(1)
    return (mask | torch.eye(total, dtype=torch.bool, device=device)).unsqueeze(1)


def check_packed(model: torch.nn.Module) -> None:
    """A ConfigError unless the packed forward computes `model`'s own log-probabilities: it needs attention that takes
    a custom mask, and no sliding window (Transformers applies no window to a custom mask, so every completion would
    see the whole prompt: Mistral v0.1, Gemma 2/3, Qwen2 with `use_sliding_window`)."""
    if not takes_custom_mask(model):
        raise ConfigError(
            f"shared_prompt_forward='packed' needs attention that takes a custom mask {MASKED_ATTENTION}, the model "
            f"uses {attention_implementation(model)!r}: load it with attn_implementation='sdpa' or use "
            "shared_prompt_forward='cache'"
        )
    if sliding_attention(model):
        raise ConfigError(
            "shared_prompt_forward='packed' cannot apply the model's sliding attention window: use "
            "shared_prompt_forward='cache' (or 'plain' with gradient checkpointing)"
        )


def packed_completion_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, 1 + K] log-probabilities from one packed sequence per prompt."""
    check_packed(model)
    prompt, prompt_mask = batch["prompt_ids"], batch["prompt_attention_mask"]
    ids = batch["completion_ids"]
    flat_ids, flat_mask, rows, count, width = _flat(batch)
    prompt_len = prompt.shape[1]
    lengths = prompt_mask.long().sum(1, keepdim=True)
    offsets = torch.arange(width, device=ids.device).repeat(count)
    mask = model_attention_mask(model, packed_attention_mask(prompt_mask, count, width))
    starts = prompt_len + torch.arange(count, device=ids.device).unsqueeze(1) * width
    inside = starts + torch.arange(width - 1, device=ids.device)
    keep = torch.cat([torch.full((count, 1), prompt_len - 1, device=ids.device), inside], 1).reshape(-1)
    outputs = model(
        input_ids=torch.cat([prompt, ids.reshape(rows, count * width)], 1),
        attention_mask=mask,
        position_ids=torch.cat([_positions(prompt_mask), lengths + offsets], 1),
        logits_to_keep=keep,
        use_cache=False,
    )
    logits = outputs.logits.reshape(rows * count, width, -1)
    return _gather(logits, flat_ids, flat_mask).view(rows, count)


def cached_completion_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, 1 + K] log-probabilities with one prompt forward whose KV cache serves all 1 + K completions."""
    prompt, prompt_mask = batch["prompt_ids"], batch["prompt_attention_mask"]
    flat_ids, flat_mask, rows, count, width = _flat(batch)
    prompt_out = model(
        input_ids=prompt,
        attention_mask=prompt_mask,
        position_ids=_positions(prompt_mask),
        use_cache=True,
        logits_to_keep=1,
    )
    if prompt_out.cache is None:
        raise ConfigError(
            "shared_prompt_forward='cache' needs the KV cache, which gradient checkpointing turns off while "
            "training: set gradient_checkpointing=False or use shared_prompt_forward='packed'"
        )
    cache = prompt_out.cache
    cache.batch_repeat_interleave(count)
    lengths = prompt_mask.long().sum(1).repeat_interleave(count)
    completion_out = model(
        input_ids=flat_ids,
        attention_mask=torch.cat([prompt_mask.repeat_interleave(count, 0), flat_mask], 1),
        position_ids=lengths.unsqueeze(1) + torch.arange(width, device=flat_ids.device),
        cache=cache,
        use_cache=True,
    )
    first = prompt_out.logits[:, -1:].repeat_interleave(count, 0)
    logits = torch.cat([first, completion_out.logits[:, :-1]], 1)
    return _gather(logits, flat_ids, flat_mask).view(rows, count)


FORWARDS: dict[str, Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]] = {
    "plain": plain_completion_logps,
    "packed": packed_completion_logps,
    "cache": cached_completion_logps,
}
