"""Constrained decoding speed on MovieLens-100K test users, beam width 20, one trained tiny model, one run.

    python benchmarks/decode.py [--users 128] [--batch-size 16] [--steps 60] [--work DIR]
    python benchmarks/decode.py --shape qwen2.5-0.5b --run runs/ml100k [--users 4] [--layers N]

Users per second of
  (a) `generate` + `prefix_allowed_tokens_fn` walking a Python dict trie (how LC-Rec and MiniOneRec constrain),
  (b) `generate` + `SCIDLogitsProcessor` (the compiled trie),
  (c) the dedicated fixed-length beam search,
  (d) exhaustive scoring of every item,
and unconstrained `generate` beam search (same settings, no constraint) as the floor. Targets: (c) >= 10x (a)
and (c) within 1.5x of the floor's time. Every method decodes two prompts first (warm-up). Peak memory is the
RSS high-water mark above the level before each run, after the memory of the runs before it is handed back to the
system.

The model: the tiny Qwen2 builder (tokenizer trained on the item titles) with the SCID tokens added, trained
here for `--steps` AdamW steps on task-A (sequential) examples of the train split. The code table is crafted
(3 levels 64 x 16 x <=2 over a seeded permutation of the items, the depth and fan-out of an RQ-VAE table), so the
benchmark does not depend on the embed/tokenize stages.

`--shape qwen2.5-0.5b` (or `qwen2.5-1.5b`) decodes with that architecture instead, built from its config with
random weights and the real vocabulary (151,936 rows) plus the SCID tokens, where the model's cost dominates. With
`--run`, the prompts, tokenizer and code tables are the run's (`RUN/sft`, the test split of `RUN/data`: the default
run's prompts, 136 tokens on average). At these shapes only the methods named in the issue run: (a), (b), (c) and
the floor.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
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
from align3gr.models.loading import load_tokenizer
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.scid.code_tables import load_code_tables
from align3gr.scid.tokens import scid_tokens
from align3gr.scid.vocabulary import extend_vocabulary
from align3gr.seeding import seeded
from align3gr.sft.prompting import encode_completion, encode_prompt
from align3gr.sft.tasks import TaskBuilder, evaluation_prompts

SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, intermediate_size=4864),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, intermediate_size=8960),
}
"""Qwen2.5 architectures (2 KV heads, tied embeddings, a 151,936-token vocabulary), built with random weights."""
QWEN_VOCABULARY = 151_936


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


def shaped_model(shape: str, tokenizer, scid_count: int, layers: int | None):
    """A Qwen2.5 `shape` with random weights (seeded) whose vocabulary is Qwen's plus `scid_count` SCID tokens; the
    tokenizer's IDs (text and SCID tokens) index its first rows."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dims = dict(SHAPES[shape], num_hidden_layers=layers or SHAPES[shape]["num_hidden_layers"])
    config = Qwen2Config(
        **dims,
        num_key_value_heads=2,
        vocab_size=max(QWEN_VOCABULARY + scid_count, len(tokenizer)),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with seeded(0):
        model = Qwen2ForCausalLM(config)
    return model.eval()


def run_setup(run: Path):
    """(dataset, item codes, user codes, tokenizer) of a run: the SFT stage's tokenizer and code tables."""
    items, users = load_code_tables(run / "sft")
    return load_dataset(run / "data"), items, users, load_tokenizer(run / "sft")


class DictTrieDecoder(GenerateDecoder):
    """Baseline (a): `generate` with `prefix_allowed_tokens_fn` walking a nested Python dict, beam by beam."""

    def __init__(self, *args, item_token_paths: list[list[int]], **kwargs):
        super().__init__(*args, **kwargs)
        self.root: dict = {}
        for path in item_token_paths:
            node = self.root
            for token in path:
                node = node.setdefault(token, {})

    def constraint(self, prompt_length: int, banned: torch.Tensor | None) -> dict:
        if banned is not None:
            raise ValueError("the dict-trie baseline ranks every item: no exclusions")

        def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            node = self.root
            for token in input_ids[prompt_length:].tolist():
                node = node.get(token, {})
            return list(node)

        return {"prefix_allowed_tokens_fn": allowed}


class PeakRSS:
    """Samples the process's resident set size every 2 ms; `peak` is the high-water mark above the start. Memory an
    earlier method freed is first handed back to the system (`malloc_trim`): kept by the allocator, it would be
    reused unseen and a later method would show no peak."""

    def __enter__(self):
        gc.collect()
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
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


DICT_TRIE = "(a) generate + dict-trie prefix_allowed_tokens_fn"
PROCESSOR = "(b) generate + SCIDLogitsProcessor"
BEAM = "(c) dedicated beam search"
EXPANDED = "(c') beam search, expanded cache"
EXHAUSTIVE = "(d) exhaustive scoring"
FLOOR = "floor: unconstrained generate beam search"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=128, help="Test users decoded by every method.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60, help="Training steps of the tiny model.")
    parser.add_argument("--work", type=Path, help="Working folder (default: a temporary one).")
    parser.add_argument("--shape", choices=tuple(SHAPES), help="Decode with this architecture (random weights).")
    parser.add_argument("--layers", type=int, help="With --shape: fewer decoder layers than the architecture's.")
    parser.add_argument("--run", type=Path, help="With --shape: a run folder whose prompts and SCID tables to use.")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="align3gr-decode-bench-"))
    if args.run:
        dataset, items, users, tokenizer = run_setup(args.run)
    else:
        build_dataset("movielens", "recbole", work / "data")
        dataset = load_dataset(work / "data")
        items, users = crafted_codes(list(dataset.items), 0), crafted_codes(list(dataset.sequences), 1, "u")
    if args.shape:
        if not args.run:
            _, tokenizer = train_tiny_model(dataset, items, users, work, 0)
        model = shaped_model(args.shape, tokenizer, len(scid_tokens(items, users)), args.layers)
    elif args.run:
        parser.error("--run needs --shape (without it the benchmark trains its own tiny model)")
    else:
        model, tokenizer = train_tiny_model(dataset, items, users, work, args.steps)
    trie = trie_for_model(items, tokenizer, model)
    prompts = [ids for _, ids in evaluation_prompts(dataset, items, users, "test", tokenizer)]
    prompts = prompts[: args.users]
    vocabulary = tokenizer.get_vocab()
    common = {"pad_token_id": tokenizer.pad_token_id, "beam_size": 20, "batch_size": args.batch_size}
    eos = tokenizer.eos_token_id
    paths = [[vocabulary[c] for c in codes] for codes in items.values()]
    methods = {
        DICT_TRIE: DictTrieDecoder(model, trie, eos_token_id=eos, item_token_paths=paths, **common),
        PROCESSOR: GenerateDecoder(model, trie, eos_token_id=eos, **common),
        BEAM: BeamSearchDecoder(model, trie, layout="tree", **common),
        EXPANDED: BeamSearchDecoder(model, trie, layout="expand", **common),
        EXHAUSTIVE: ExhaustiveDecoder(model, trie, **common),
        FLOOR: GenerateDecoder(model, trie, eos_token_id=eos, constrained=False, **common),
    }
    if args.shape:
        del methods[EXPANDED], methods[EXHAUSTIVE]
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
    length = sum(map(len, prompts)) / len(prompts)
    shape = f"{args.shape}, {model.config.num_hidden_layers} layers, vocabulary {model.config.vocab_size}"
    print(f"\nModel: {shape if args.shape else 'the trained tiny Qwen2'}; {len(prompts)} test users (prompts of")
    print(f"{length:.0f} tokens on average); items: {len(trie)}; beam width 20; batch {args.batch_size}")
    print(format_table(rows, "Constrained decoding"))
    speedup, floor_ratio = seconds[DICT_TRIE] / seconds[BEAM], seconds[BEAM] / seconds[FLOOR]
    print(f"\n(c) vs (a): {speedup:.1f}x faster (target >= 10x: {'met' if speedup >= 10 else 'NOT met'})")
    print(f"(c) / floor time: {floor_ratio:.2f} (target <= 1.5: {'met' if floor_ratio <= 1.5 else 'NOT met'})")
    same = lists[DICT_TRIE] == lists[PROCESSOR] == lists[BEAM]
    print(f"(a), (b), (c) return the same ranked lists: {same}")
    if EXPANDED in methods:
        tree_gain, same_layouts = seconds[EXPANDED] / seconds[BEAM], lists[BEAM] == lists[EXPANDED]
        print(f"(c) vs (c'): {tree_gain:.1f}x faster; same ranked lists: {same_layouts}")
        exact_top = sum(e[:1] == c[:1] for e, c in zip(lists[EXHAUSTIVE], lists[BEAM], strict=True))
        print(f"beam search's top item is the exact top item for {exact_top} of {len(prompts)} users")


if __name__ == "__main__":
    main()
