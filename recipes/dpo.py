"""Recipe: progressive Softmax-DPO (stage `dpo`), under `accelerate launch` or alone.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/dpo.py \\
        --config recipes/configs/ml100k.yaml --data runs/ml100k/data --start runs/ml100k/sft --out runs/ml100k/dpo

The options are the fields of `align3gr.dpo.config.DPOStageConfig` (the YAML's `dpo:` section, then flags); the
valid-split check after each stage takes the YAML's `evaluate:` section (`align3gr.evaluate.config.EvaluateConfig`);
`--stages` picks the stages (Table 5 variants: recipes/configs/table5/*.yaml).
"""

import sys

from align3gr.cli import main

if __name__ == "__main__":
    sys.exit(main(["dpo", *sys.argv[1:]]))
