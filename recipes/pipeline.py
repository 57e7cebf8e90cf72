"""Recipe: the whole method on one config (data, embed, tokenize, sft, evaluate, the DPO stages, evaluate).

    python recipes/pipeline.py --config recipes/configs/ml100k.yaml --run-dir runs/ml100k

Each stage reads its section of the config, as the stage recipes do; stages that are up to date are skipped, so a
run stopped or killed midway continues where it was when started again.
"""

import sys

from align3gr.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
