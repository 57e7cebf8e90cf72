"""Recipe: evaluate a trained model on the valid or test users (Recall/NDCG@5/10 with beam width 20).

    python recipes/evaluate.py --model runs/ml100k/sft --data runs/ml100k/data --out runs/ml100k/eval/sft
    accelerate launch --multi_gpu --num_machines 1 --num_processes 2 recipes/evaluate.py \
        --model ... --data ... --out ...

Users are split across the launched processes; the ranked lists and metrics are those of a single-process run.
Any option of `align3gr evaluate` may follow (`--config recipes/configs/X.yaml` reads its `evaluate:` section).
"""

import sys

from align3gr.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
