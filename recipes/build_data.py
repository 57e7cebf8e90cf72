"""Recipe: build the canonical dataset of a config's `source:` and `data:` sections.

    python recipes/build_data.py --config recipes/configs/ml100k.yaml --out runs/ml100k/data

Any option of `align3gr data build` may follow and overrides the YAML.
"""

import sys

from align3gr.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "build", *sys.argv[1:]]))
