"""Wall time of `embed` + `tokenize` on MovieLens-100K with the default settings (target: under 5 minutes on
2 CPU cores), against a plain item-only RQ-VAE (no CF, no U2I: the TIGER / LC-Rec tokenizer) as the baseline.

    python benchmarks/tokenize_ml100k.py [--work DIR]

Runs from a cold embedding cache so the sentence encoder's time is included.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from align3gr.console import format_table
from align3gr.data.build import build_dataset
from align3gr.embed.config import EmbedConfig
from align3gr.embed.stage import run_embed
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.stage import run_tokenize

BUDGET_SECONDS = 300.0


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="Working folder (default: a temporary one).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="align3gr-tokenize-bench-"))
    data = work / "data"
    build_dataset("movielens", "recbole", data)
    embeddings, embed_seconds = timed(run_embed, data, work / "embeddings", EmbedConfig(cache_dir=str(work / "cache")))
    report, tokenize_seconds = timed(run_tokenize, data, work / "embeddings", work / "scid", TokenizeConfig())
    baseline_config = TokenizeConfig(dual=False, use_cf=False, u2i=False)
    baseline, baseline_seconds = timed(run_tokenize, data, work / "embeddings", work / "scid_baseline", baseline_config)
    total = embed_seconds + tokenize_seconds
    rows = [
        {"run": "embed (MiniLM + collaborative encoder)", "seconds": round(embed_seconds, 1)},
        {"run": "tokenize (dual, CF, U2I: defaults)", "seconds": round(tokenize_seconds, 1)},
        {"run": "embed + tokenize", "seconds": round(total, 1)},
        {"run": "baseline tokenize (item-only RQ-VAE)", "seconds": round(baseline_seconds, 1)},
    ]
    print("\n" + format_table(rows, f"MovieLens-100K, CPU, {torch.get_num_threads()} torch thread(s)"))
    levels = report["items"]["levels"]
    print(f"\nembed + tokenize: {total:.1f}s = x{total / BUDGET_SECONDS:.2f} of the {BUDGET_SECONDS:.0f}s budget")
    print(f"dual tokenizer vs item-only baseline: x{tokenize_seconds / baseline_seconds:.2f} time")
    print(
        f"items: collision rate {report['items']['collisions']['collision_rate_before']:.4f} before, "
        f"{report['items']['collisions']['collision_rate_after']:.4f} after; utilisation per level of the raw codes "
        + ", ".join(f"{level['utilisation']:.3f}" for level in levels)
    )
    print(f"users: collision rate {report['users']['collision_rate']:.4f}; final validation U2I AUC "
          f"{report['u2i_auc']['phase2'][-1]:.4f}; collaborative encoder valid Recall@10 "
          f"{embeddings.report['collaborative_valid_recall@10']:.4f}")  # fmt: skip
    print(f"baseline items: collision rate {baseline['items']['collisions']['collision_rate_before']:.4f} before")


if __name__ == "__main__":
    main()
