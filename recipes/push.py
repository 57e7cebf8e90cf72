"""Recipe: publish one stage of a run to the Hugging Face Hub, or write the exact upload to a folder.

    python recipes/push.py --run runs/ml100k --stage rf_hard --repo-id me/align3gr-ml100k --private
    python recipes/push.py --run runs/ml100k --stage sft --to-folder published/ml100k-sft

The token comes from HF_TOKEN or `hf auth login`. Load the result with `align3gr.load_recommender(repo_or_folder)`.
Any option of `align3gr push` may follow.
"""

import sys

from align3gr.cli import main

if __name__ == "__main__":
    sys.exit(main(["push", *sys.argv[1:]]))
