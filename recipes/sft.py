"""Recipe: vocabulary extension and multi-task SFT (stage `sft`), under `accelerate launch` or alone.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft.py \
        --config recipes/configs/ml100k.yaml --data runs/ml100k/data --scid runs/ml100k/scid --out runs/ml100k/sft

The options are the fields of `align3gr.sft.config.SFTStageConfig` (the YAML's `sft:` section, then flags).
Every process runs it; without a GPU several processes use gloo and DeepSpeed's CPU accelerator.
"""

import sys

from align3gr.cli import main

if __name__ == "__main__":
    sys.exit(main(["sft", *sys.argv[1:]]))
