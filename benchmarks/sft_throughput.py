"""SFT training throughput: padded batches vs padding-free batches vs BFD packing, on the same examples.

    python benchmarks/sft_throughput.py --data runs/ml100k/data --scid runs/ml100k/scid [--examples-per-task 200]
        [--batch-size 32] [--max-length 512]

Builds the tiny default base model for the dataset, extends it with the SCID tokens, tokenizes one seeded sample of
the task mixture, and trains one epoch over it in each mode from the same initial weights. Prints each run's mean
answer-token training loss (the modes see the same tokens, so losses should be close) and training tokens per second
(real tokens, padding excluded), with the ratio to padding.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from align3gr.console import format_table
from align3gr.data.dataset import load_dataset
from align3gr.models.loading import load_model_and_tokenizer
from align3gr.scid.code_tables import load_code_tables
from align3gr.scid.tokens import scid_tokens
from align3gr.scid.vocabulary import extend_vocabulary
from align3gr.sft.arguments import sft_arguments
from align3gr.sft.base_model import build_tiny_base
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.data import encode_examples, sample_per_task, trainer_rows
from align3gr.sft.tasks import TASKS, TaskBuilder

MODES = {"padding": {}, "padding-free": {"padding_free": True}, "packing (bfd)": {"packing": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="Canonical dataset folder.")
    parser.add_argument("--scid", required=True, type=Path, help="Code tables folder (align3gr tokenize output).")
    parser.add_argument("--examples-per-task", type=int, default=200, help="Examples of each task in the sample.")
    parser.add_argument("--batch-size", type=int, default=32, help="Examples per step (padding, padding-free).")
    parser.add_argument("--max-length", type=int, default=512, help="Row length when packing.")
    args = parser.parse_args()

    from trl import SFTTrainer

    dataset = load_dataset(args.data)
    item_codes, user_codes = load_code_tables(args.scid, dataset)
    examples = sample_per_task(TaskBuilder(dataset, item_codes, user_codes).build(TASKS), args.examples_per_task, 0)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        default = SFTStageConfig()
        base = build_tiny_base(
            dataset, Path(work) / "base", default.tiny_vocab_size, default.tiny_hidden_size, default.tiny_layers, 0
        )
        for mode, options in MODES.items():
            model, tokenizer = load_model_and_tokenizer(base)
            extend_vocabulary(model, tokenizer, scid_tokens(item_codes, user_codes))
            train = encode_examples(examples, tokenizer, args.max_length)
            tokens = sum(len(ids) for ids in train["input_ids"])
            config = SFTStageConfig(  # no valid ranking: nothing but training is timed
                per_device_train_batch_size=args.batch_size,
                max_length=args.max_length,
                logging_steps=10**6,
                valid_users=0,
                **options,
            )
            arguments = sft_arguments(config, Path(work) / "out", eval_steps=10**6)
            arguments.eval_on_start = False
            arguments.eval_strategy = arguments.save_strategy = "no"
            prepared = trainer_rows(train, arguments, arguments.packing)  # the stage's: TRL's preparation is skipped
            trainer = SFTTrainer(model=model, args=arguments, train_dataset=prepared, processing_class=tokenizer)
            start = time.perf_counter()
            metrics = trainer.train().metrics
            seconds = time.perf_counter() - start
            rows.append(
                {"mode": mode, "steps": trainer.state.global_step, "tokens": tokens, "seconds": round(seconds, 1),
                 "tokens/s": round(tokens / seconds, 1), "train loss": metrics["train_loss"]}
            )  # fmt: skip
    for row in rows:
        row["vs padding"] = f"{row['tokens/s'] / rows[0]['tokens/s']:.2f}x"
    print(format_table(rows, f"\nSFT throughput, {len(examples)} examples of {len(TASKS)} tasks, tiny Qwen2, CPU"))


if __name__ == "__main__":
    main()
