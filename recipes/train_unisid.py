"""Recipe: the UniSID item tokenizer (stage `tokenize` with `item_tokenizer: unisid`), under `accelerate
launch` or alone. User codes still come from the dual tokenizer (trained by the main process).

    accelerate launch --multi_gpu --num_processes 2 recipes/train_unisid.py \
        --config recipes/configs/ml100k_unisid.yaml \
        --data runs/ml100k/data --embeddings runs/ml100k/embeddings --out runs/ml100k/scid

The options are the fields of `align3gr.tokenize.config.TokenizeConfig` (the YAML's `tokenize:` section, then flags);
UniSID's own are its `unisid_options` (`align3gr.tokenize.unisid.config.UniSIDConfig`). Without a GPU the
processes train over gloo (DDP).
"""

import sys

from align3gr.cli import main

if __name__ == "__main__":
    sys.exit(main(["tokenize", "--item-tokenizer", "unisid", *sys.argv[1:]]))
