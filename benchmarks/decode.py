"""Constrained decoding speed on MovieLens-100K test users, beam width 20, one trained tiny model, one run.

    python benchmarks/decode.py [--users 128] [--batch-size 16] [--steps 60] [--work DIR]

Users per second of
  (a) `generate` + `prefix_allowed_tokens_fn` walking a Python dict trie (how LC-Rec and MiniOneRec constrain),
  (b) `generate` + `SCIDLogitsProcessor` (the compiled trie),
  (c) the dedicated fixed-length beam search,
  (d) exhaustive scoring of every item,
and unconstrained `generate` beam search (same settings, no constraint) as the floor. Targets: (c) >= 10x (a)
and (c) within 1.5x of the floor's time. Every method decodes two prompts first (warm-up). Peak memory is the
RSS high-water mark above the level before each run.

The model: the tiny Qwen2 builder (tokenizer trained on the item titles) with the SCID tokens added, trained
here for `--steps` AdamW steps on task-A (sequential) examples of the train split. The code table is crafted
(3 levels 64 x 16 x <=2 over a seeded permutation of the items, the depth and fan-out of an RQ-VAE table), so the
benchmark does not depend on the embed/tokenize stages.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path

import torch

from align3gr.console import format_table
from align3gr.data.build import build_dataset
from align3gr.data.dataset import Dataset, load_dataset
from align3gr.decode import BeamSearchDecoder, ExhaustiveDecoder, GenerateDecoder
from align3gr.decode.trie import trie_for_model
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.scid.tokens import scid_tokens
from align3gr.scid.vocabulary import extend_vocabulary
from align3gr.seeding import seeded
from align3gr.sft.prompting import encode_completion, encode_prompt
from align3gr.sft.tasks import TaskBuilder, evaluation_prompts


def crafted_codes(ids: list[str], seed: int, prefix: str = "") -> dict[str, list[str]]:
    order = list(ids)
    random.Random(seed).shuffle(order)
    return {
        key: [f"<{prefix}a_{p % 64}>", f"<{prefix}b_{(p // 64) % 16}>", f"<{prefix}c_{p // 1024}>"]
        for p, key in enumerate(order)
    }


def train_tiny_model(dataset: Dataset, items: dict, users: dict, folder: Path, steps: int, batch: int = 16):
    """Tiny Qwen2 + SCID tokens, trained for `steps` AdamW steps on task-A completions (loss on answer tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [item.title for item in dataset.items.values()] + ["The user has interacted with these items"] * 50
    base = build_tiny_causal_lm(texts, folder / "base", vocab_size=1024, hidden_size=128, seed=0)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    extend_vocabulary(model, tokenizer, scid_tokens(items, users))
    examples = list(TaskBuilder(dataset, items, users).seq())
    random.Random(0).shuffle(examples)
    rows = [(encode_prompt(tokenizer, e.prompt), encode_completion(tokenizer, e.completion)) for e in examples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    with seeded(0):
        for step in range(steps):
            chunk = rows[(step * batch) % len(rows) :][:batch]
            width = max(len(p) + len(c) for p, c in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            labels = torch.full((len(chunk), width), -100)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (p, c) in enumerate(chunk):
                ids[r, : len(p) + len(c)] = torch.tensor(p + c)
                labels[r, len(p) : len(p) + len(c)] = torch.tensor(c)
                mask[r, : len(p) + len(c)] = 1
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step % 50 == 0 or step == steps - 1:
                print(f"train step {step}: task-A loss {loss.item():.3f}")
    model.eval()
    return model, tokenizer


class DictTrieDecoder(GenerateDecoder):
    """Baseline (a): `generate` with `prefix_allowed_tokens_fn` walking a nested Python dict, beam by beam."""

    def __init__(self, *args, item_token_paths: list[list[int]], **kwargs):
        super().__init__(*args, **kwargs)
        self.root: dict = {}
        for path in item_token_paths:
            node = self.root
            for token in path:
                node = node.setdefault(token, {})

    def constraint(self, prompt_length: int) -> dict:
        def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            node = self.root
            for token in input_ids[prompt_length:].tolist():
                node = node.get(token, {})
            return list(node)

        return {"prefix_allowed_tokens_fn": allowed}


class PeakRSS:
    """Samples the process's resident set size every 2 ms; `peak` is the high-water mark above the start."""

    def __enter__(self):
        self.start = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=128, help="Test users decoded by every method.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60, help="Training steps of the tiny model.")
    parser.add_argument("--work", type=Path, help="Working folder (default: a temporary one).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="align3gr-decode-bench-"))
    build_dataset("movielens", "recbole", work / "data")
    dataset = load_dataset(work / "data")
    items, users = crafted_codes(list(dataset.items), 0), crafted_codes(list(dataset.sequences), 1, "u")
    model, tokenizer = train_tiny_model(dataset, items, users, work, args.steps)
    trie = trie_for_model(items, tokenizer, model)
    prompts = [ids for _, ids in evaluation_prompts(dataset, items, users, "test", tokenizer)]
    prompts = prompts[: args.users]
    vocabulary = tokenizer.get_vocab()
    common = {"pad_token_id": tokenizer.pad_token_id, "beam_size": 20, "batch_size": args.batch_size}
    eos = tokenizer.eos_token_id
    paths = [[vocabulary[c] for c in codes] for codes in items.values()]
    methods = {
        "(a) generate + dict-trie prefix_allowed_tokens_fn": DictTrieDecoder(
            model, trie, eos_token_id=eos, item_token_paths=paths, **common
        ),
        "(b) generate + SCIDLogitsProcessor": GenerateDecoder(model, trie, eos_token_id=eos, **common),
        "(c) dedicated beam search": BeamSearchDecoder(model, trie, layout="tree", **common),
        "(c') beam search, expanded cache": BeamSearchDecoder(model, trie, layout="expand", **common),
        "(d) exhaustive scoring": ExhaustiveDecoder(model, trie, **common),
        "floor: unconstrained generate beam search": GenerateDecoder(
            model, trie, eos_token_id=eos, constrained=False, **common
        ),
    }
    for decoder in methods.values():
        decoder.recommend(prompts[:2])
    rows, seconds, lists = [], {}, {}
    for name, decoder in methods.items():
        with PeakRSS() as memory:
            start = time.perf_counter()
            results = decoder.recommend(prompts)
            seconds[name] = time.perf_counter() - start
        lists[name] = [r.items for r in results]
        rows.append(
            {
                "method": name,
                "users/s": len(prompts) / seconds[name],
                "seconds": seconds[name],
                "peak RSS MiB": (memory.peak - memory.start) / 2**20,
                "valid rate": sum(r.valid for r in results) / max(1, sum(r.returned for r in results)),
            }
        )
    names = list(methods)
    print(f"\nMovieLens-100K test users: {len(prompts)}; items: {len(trie)}; beam width 20; batch {args.batch_size}")
    print(format_table(rows, "Constrained decoding"))
    speedup = seconds[names[0]] / seconds[names[2]]
    floor_ratio = seconds[names[2]] / seconds[names[5]]
    print(f"\n(c) vs (a): {speedup:.1f}x faster (target >= 10x: {'met' if speedup >= 10 else 'NOT met'})")
    print(f"(c) / floor time: {floor_ratio:.2f} (target <= 1.5: {'met' if floor_ratio <= 1.5 else 'NOT met'})")
    same = lists[names[0]] == lists[names[1]] == lists[names[2]]
    print(f"(a), (b), (c) return the same ranked lists: {same}")
    tree_gain, same_layouts = seconds[names[3]] / seconds[names[2]], lists[names[2]] == lists[names[3]]
    print(f"(c) vs (c'): {tree_gain:.1f}x faster; same ranked lists: {same_layouts}")
    exact_top = sum(e[:1] == c[:1] for e, c in zip(lists[names[4]], lists[names[2]], strict=True))
    print(f"beam search's top item is the exact top item for {exact_top} of {len(prompts)} users")


if __name__ == "__main__":
    main()
