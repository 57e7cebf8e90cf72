"""Recipe: train the dual SCID tokenizer and write the code tables (stage `tokenize`).

    python recipes/train_tokenizer.py --config recipes/configs/ml100k.yaml --data runs/ml100k/data \
        --embeddings runs/ml100k/embeddings --out runs/ml100k/scid

The options are the fields of `align3gr.tokenize.config.TokenizeConfig` (the YAML's `tokenize:` section, then
flags): the same section `align3gr pipeline` reads, so the codes equal the pipeline's.
"""

import sys

from align3gr.cli import main

if __name__ == "__main__":
    sys.exit(main(["tokenize", *sys.argv[1:]]))
