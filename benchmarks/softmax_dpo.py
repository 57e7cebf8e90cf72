"""Softmax-DPO training step: the shared-prompt forwards against the plain forward, at K = 20 rejected
completions and 128-token prompts (Align3GR implementation details; target: shared at least 4x faster).

    python benchmarks/softmax_dpo.py [--steps 5] [--rows 2] [--hidden 256] [--layers 4] [--threads N]

A Qwen2-architecture model created from a config (random weights: timing does not depend on them) with
3 SCID levels of 256 codes added to a 8k vocabulary. One step is what `SoftmaxDPOTrainer` does per batch: the
reference log-probabilities (no gradient), the policy's, the loss of Eq. 3, backward and an AdamW step. Each
forward runs in a fresh subprocess so its peak RSS is its own; one table and the ratios are printed, by wall
time and by CPU time (the latter barely moves when other work shares the machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from align3gr.console import format_table

COMPLETION_TOKENS = 4  # three SCID codes and the EOS


def make_batch(rows: int, prompt_tokens: int, rejected: int, vocab: int) -> dict[str, torch.Tensor]:
    """Random prompts (a little left padding on every other row) and 1 + K SCID completions."""
    generator = torch.Generator().manual_seed(0)
    prompt_mask = torch.ones(rows, prompt_tokens, dtype=torch.long)
    prompt_mask[1::2, : prompt_tokens // 8] = 0
    return {
        "prompt_ids": torch.randint(10, vocab, (rows, prompt_tokens), generator=generator) * prompt_mask,
        "prompt_attention_mask": prompt_mask,
        "completion_ids": torch.randint(10, vocab, (rows, rejected + 1, COMPLETION_TOKENS), generator=generator),
        "completion_attention_mask": torch.ones(rows, rejected + 1, COMPLETION_TOKENS, dtype=torch.long),
        "rejected_mask": torch.ones(rows, rejected, dtype=torch.bool),
    }


def child(mode: str, args: argparse.Namespace) -> dict:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from align3gr.dpo.shared_prompt import FORWARDS
    from align3gr.dpo.softmax_dpo_loss import softmax_dpo_loss

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab = 8192 + 3 * 256
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=8,
    )
    config._attn_implementation = "sdpa"
    policy, reference = Qwen2ForCausalLM(config), Qwen2ForCausalLM(config).eval()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    batch = make_batch(args.rows, args.prompt_tokens, args.rejected, vocab)
    forward = FORWARDS[mode]
    times, cpu = [], []
    for _ in range(args.steps + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            ref = forward(reference, batch)
        logps = forward(policy, batch)
        out = softmax_dpo_loss(logps[:, 0], logps[:, 1:], ref[:, 0], ref[:, 1:], 0.1, batch["rejected_mask"])
        out.losses.mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {
        "step_seconds": sum(times[1:]) / args.steps,
        "step_cpu_seconds": sum(cpu[1:]) / args.steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2, help="Prompts per batch.")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--rejected", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, help="torch threads of each step (default: torch's own).")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    results = {}
    for mode in ("plain", "packed", "cache"):
        command = [sys.executable, __file__, "--child", mode, *sys.argv[1:]]
        results[mode] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    plain = results["plain"]
    rows = [
        {"forward": mode, "s/step": r["step_seconds"], "CPU s/step": r["step_cpu_seconds"],
         "peak RSS MB": r["peak_rss_mb"], "x plain (wall)": plain["step_seconds"] / r["step_seconds"],
         "x plain (CPU)": plain["step_cpu_seconds"] / r["step_cpu_seconds"]}
        for mode, r in results.items()
    ]  # fmt: skip
    title = (
        f"Softmax-DPO step: {args.rows} prompts x (1 + {args.rejected}) completions, {args.prompt_tokens}-token "
        f"prompts, Qwen2 {args.layers}x{args.hidden}, {plain['threads']} CPU thread(s)"
    )
    print(format_table(rows, title))
    best = min(("packed", "cache"), key=lambda m: results[m]["step_seconds"])
    speedup = plain["step_seconds"] / results[best]["step_seconds"]
    memory = plain["peak_rss_mb"] / results[best]["peak_rss_mb"]
    verdict = "met" if speedup >= 4 else "NOT met"
    print(
        f"\nshared-prompt ({best}) vs plain: x{speedup:.1f} faster (target x4: {verdict}), x{memory:.1f} less peak RSS"
    )


if __name__ == "__main__":
    main()
