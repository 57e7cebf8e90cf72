"""Recipe: semantic and collaborative embeddings of items and users (stage `embed`).

    python recipes/embed.py --config recipes/configs/ml100k.yaml --data runs/ml100k/data --out runs/ml100k/embeddings

The options are the fields of `align3gr.embed.config.EmbedConfig` (the YAML's `embed:` section, then flags).
"""

import sys

from align3gr.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
