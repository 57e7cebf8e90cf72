"""SFT rows at tokenizer speed: the task mixture tokenized one example at a time vs in batches, then TRL's dataset
preparation vs the stage's own, and the cached rows loaded back, in one run on the same examples.

    python benchmarks/sft_rows.py [--run RUN | --data DATA --scid SCID] [--every N] [--work DIR]

The examples are the `sft` stage's default mixture with no per-task cap (every task, `prompt` form of task A: 392,708
examples on MovieLens-100K), the tokenizer the stage's default tiny base with the SCID tokens added, both built as
the stage builds them. `--run` takes a run folder's `data/` and `scid/`; by default the MovieLens-100K data is built
here and its code table crafted (3 levels 64 x 16 x <=2 over a seeded permutation, as `benchmarks/decode.py` does),
since tokenization depends only on the code tokens' count and shape. `--every N` keeps every N-th example.

Prints examples per second of
  (a) rows one example at a time (`encode_example`, the path before batching),
  (b) rows in batches (`encode_examples`), checked equal to (a) token for token,
  (c) TRL's preparation of (a)'s rows (`SFTTrainer._prepare_dataset`: labels, truncation, filter) vs the stage's
      (`trainer_rows`, with `skip_prepare_dataset`), checked equal,
  (d) rows to the trainer: (a)+TRL's preparation vs (b)+the stage's, and a resumed run's cached rows + the stage's,
with each ratio to the path before.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from decode import crafted_codes
from tokenize_ml100k import timed

from align3gr.console import format_table
from align3gr.data.build import build_dataset
from align3gr.data.dataset import load_dataset
from align3gr.scid.code_tables import load_code_tables
from align3gr.sft.arguments import sft_arguments
from align3gr.sft.base_model import build_tiny_base
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.data import cached_rows, encode_example, encode_examples, rows_dataset, sample_per_task, trainer_rows
from align3gr.sft.stage import scid_model
from align3gr.sft.tasks import TaskBuilder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="Run folder holding data/ and scid/.")
    parser.add_argument("--data", type=Path, help="Canonical dataset folder (default: RUN/data, or built here).")
    parser.add_argument("--scid", type=Path, help="Code tables folder (default: RUN/scid, or crafted).")
    parser.add_argument("--every", type=int, default=1, help="Keep every N-th example of the mixture.")
    parser.add_argument("--work", type=Path, help="Working folder (default: a temporary one).")
    args = parser.parse_args()
    from trl import SFTTrainer

    work = args.work or Path(tempfile.mkdtemp(prefix="align3gr-sft-rows-"))
    data = args.data or (args.run / "data" if args.run else work / "data")
    if not data.is_dir():
        build_dataset("movielens", "recbole", data)
    dataset = load_dataset(data)
    scid = args.scid or (args.run / "scid" if args.run else None)
    if scid is not None:
        item_codes, user_codes = load_code_tables(scid, dataset)
    else:
        item_codes, user_codes = crafted_codes(list(dataset.items), 0), crafted_codes(list(dataset.sequences), 1, "u")
    config = SFTStageConfig()
    base = build_tiny_base(
        dataset, work / "base", config.tiny_vocab_size, config.tiny_hidden_size, config.tiny_layers, config.seed
    )
    model, tokenizer, _, _ = scid_model(str(base), dataset, item_codes, user_codes, config)
    builder = TaskBuilder(dataset, item_codes, user_codes, seed=config.seed)
    examples = sample_per_task(builder.build(config.tasks), config.max_examples_per_task, config.seed)[:: args.every]
    count = len(examples)

    pairs = (encode_example(example, tokenizer) for example in examples)
    reference, one_at_a_time = timed(rows_dataset, pairs, config.max_length)
    rows, batched = timed(encode_examples, examples, tokenizer, config.max_length)
    if rows.to_dict() != reference.to_dict():
        raise SystemExit("the batched rows differ from the per-example rows")
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    _, written = timed(cached_rows, examples, tokenizer, config.max_length, cache)
    cached, loaded = timed(cached_rows, examples, tokenizer, config.max_length, cache)

    arguments = sft_arguments(config, work / "out", eval_steps=config.save_steps)
    few = trainer_rows(rows.select(range(8)), arguments, False)
    trainer = SFTTrainer(model=model, args=arguments, train_dataset=few, eval_dataset=few, processing_class=tokenizer)
    prepared, trl_seconds = timed(trainer._prepare_dataset, reference, tokenizer, arguments, False, None, "train")
    ours, stage_seconds = timed(trainer_rows, cached, arguments, False)
    if prepared.select_columns(["input_ids", "labels"]).to_dict() != ours.to_dict():
        raise SystemExit("the stage's prepared rows differ from TRL's")

    before = one_at_a_time + trl_seconds
    table = [
        ("(a) rows, one example at a time", one_at_a_time, one_at_a_time),
        ("(b) rows, batched (equal to a)", batched, one_at_a_time),
        ("(c) TRL's preparation of (a)", trl_seconds, trl_seconds),
        ("(c) the stage's preparation (equal)", stage_seconds, trl_seconds),
        ("(d) a + TRL's preparation", before, before),
        ("(d) b + the stage's preparation", batched + stage_seconds, before),
        ("(d) cached rows written (b + save)", written, one_at_a_time),
        ("(d) cached rows loaded + the stage's", loaded + stage_seconds, before),
    ]
    print(
        format_table(
            [
                {
                    "path": name,
                    "seconds": round(seconds, 2),
                    "examples/s": round(count / seconds),
                    "vs before": f"{base_seconds / seconds:.1f}x",
                }
                for name, seconds, base_seconds in table
            ],
            f"\nSFT rows of {count} examples ({len(rows)} within max_length={config.max_length}), "
            f"{'run ' + str(args.run) if args.run else 'ML-100K, crafted codes' if scid is None else str(scid)}",
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
