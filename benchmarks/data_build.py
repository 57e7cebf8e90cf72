"""Amazon builder throughput and peak memory on a generated 1M-review file, against a pandas baseline.

    python benchmarks/data_build.py [--rows 1000000] [--keep DIR]

Generates Amazon-2018-style reviews (skewed users and items) and metadata, then runs each measurement in a fresh
subprocess so peak RSS is its own: the align3gr builder (full build: filters, feedback, texts, atomic write);
the same builder on a file with the same rows but 4x longer review text, and on a quarter of the rows; and the
common pandas approach (`read_json(lines=True)` + the same k-core). Prints one table and the ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from align3gr.console import format_table

WORDS = (
    "sound tone string guitar neck pickup fret tuner cable amp pedal quality price solid cheap great poor "
    "loud quiet warm bright buzz hum noise build finish wood metal plastic case strap easy hard sturdy "
    "flimsy value shipping arrived broken perfect recommend return again beginner pro stage studio"
).split()


def generate(
    folder: Path,
    rows: int,
    review_bytes: int,
    seed: int = 0,
    num_items: int | None = None,
    num_users: int | None = None,
    skews: tuple[float, float] = (0.6, 0.9),
    title_words: int = 0,
) -> tuple[Path, Path]:
    """Reviews (one JSON object per line) and metadata for `num_users` (~rows/20) users and `num_items` (~rows/50)
    items, Zipf-skewed by `skews` (users, items); titles get `title_words` random words after the brand."""
    rng = np.random.default_rng(seed)
    num_users, num_items = num_users or max(10, rows // 20), num_items or max(10, rows // 50)
    user_p = 1.0 / np.arange(1, num_users + 1) ** skews[0]
    item_p = 1.0 / np.arange(1, num_items + 1) ** skews[1]
    users = rng.choice(num_users, rows, p=user_p / user_p.sum())
    items = rng.choice(num_items, rows, p=item_p / item_p.sum())
    ratings = rng.integers(1, 6, rows)
    times = 1_300_000_000 + rng.integers(0, 200_000_000, rows)
    pool = [" ".join(rng.choice(WORDS, 400)) for _ in range(256)]
    texts = [t[: review_bytes - 40] for t in pool]
    reviews = folder / f"reviews_{rows}_{review_bytes}.json"
    with open(reviews, "w") as handle:
        for k in range(rows):
            handle.write(
                f'{{"overall": {ratings[k]}.0, "verified": true, "reviewerID": "U{users[k]:08d}", '
                f'"asin": "B{items[k]:09d}", "reviewerName": "Some Name", "reviewText": "{texts[k % 256]}", '
                f'"summary": "{WORDS[k % len(WORDS)]} {WORDS[(7 * k) % len(WORDS)]}", '
                f'"unixReviewTime": {times[k]}}}\n'
            )
    meta = folder / f"meta_{rows}.json"
    with open(meta, "w") as handle:
        for i in range(num_items):
            words = list(rng.choice(WORDS, title_words)) if title_words else []  # none: the rng stream as before
            title = " ".join(["Guitar &amp; Gear", *words, str(i)])
            record = {"asin": f"B{i:09d}", "title": title, "brand": f"Brand {i % 97}"}
            record |= {
                "category": ["Musical Instruments", f"Kind {i % 13}", f"Sub {i % 41}"],
                "price": f"${i % 300}.99",
            }
            record["description"] = [" ".join(rng.choice(WORDS, 30))]
            handle.write(json.dumps(record) + "\n")
    return reviews, meta


def child_align3gr(reviews: str, meta: str, out: str) -> dict:
    from align3gr.data.build import build_dataset

    result = build_dataset("amazon", Path(reviews).parent, out, builder_options={"reviews": reviews, "meta": meta})
    return {"interactions": int(result.statistics["interactions"])}


def child_pandas(reviews: str, meta: str, out: str) -> dict:
    import pandas as pd

    frame = pd.read_json(reviews, lines=True)
    frame = frame[frame["asin"].isin(set(pd.read_json(meta, lines=True)["asin"]))]
    frame = frame.sort_values(["reviewerID", "unixReviewTime"], kind="stable")
    frame = frame.drop_duplicates(["reviewerID", "asin"], keep="first")
    while True:
        keep = (frame.groupby("reviewerID")["asin"].transform("size") >= 5) & (
            frame.groupby("asin")["reviewerID"].transform("size") >= 5
        )
        if keep.all():
            break
        frame = frame[keep]
    frame.to_json(Path(out) / "interactions.jsonl", orient="records", lines=True)
    return {"interactions": len(frame)}


def measure(kind: str, reviews: Path, meta: Path, workdir: Path) -> dict:
    """Run one measurement in a fresh interpreter; returns seconds, peak RSS and the interaction count."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    if kind == "align3gr":
        out = out / "data"
    command = [sys.executable, __file__, "--child", kind, str(reviews), str(meta), str(out)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(kind: str, reviews: str, meta: str, out: str) -> None:
    start = time.perf_counter()
    result = (child_align3gr if kind == "align3gr" else child_pandas)(reviews, meta, out)
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--review-bytes", type=int, default=300, help="Review text length of the main file.")
    parser.add_argument("--keep", type=Path, help="Generate into this folder and keep it (default: a temp folder).")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "REVIEWS", "META", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="align3gr-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    quarter = max(1000, args.rows // 4)
    cases = [
        ("align3gr", args.rows, args.review_bytes),
        ("align3gr", args.rows, 4 * args.review_bytes),
        ("align3gr", quarter, args.review_bytes),
        ("pandas", args.rows, args.review_bytes),
    ]
    print(f"generating files in {workdir} ...", flush=True)
    files = {(rows, size): generate(workdir, rows, size) for _, rows, size in cases}
    table = []
    for kind, rows, size in cases:
        reviews, meta = files[(rows, size)]
        print(f"running {kind} on {rows:,} rows, {size}-byte reviews ...", flush=True)
        result = measure(kind, reviews, meta, workdir)
        file_mb = reviews.stat().st_size / 2**20
        table.append({"method": kind, "rows": rows, "file_mb": file_mb, **result})
    print()
    print(format_table([
        {"method": r["method"], "rows": r["rows"], "review bytes": size, "file MB": round(r["file_mb"], 1),
         "kept": r["interactions"], "seconds": round(r["seconds"], 1), "rows/s": round(r["rows"] / r["seconds"]),
         "peak MB": round(r["peak_rss_mb"]), "peak / file": round(r["peak_rss_mb"] / r["file_mb"], 2)}
        for r, (_, _, size) in zip(table, cases, strict=True)
    ]))  # fmt: skip
    main_run, long_text, small, baseline = table
    print(f"\nalign3gr vs pandas baseline, same file: speed x{baseline['seconds'] / main_run['seconds']:.2f}, "
          f"peak memory x{main_run['peak_rss_mb'] / baseline['peak_rss_mb']:.2f}")  # fmt: skip
    print(f"align3gr, 4x review text (file x{long_text['file_mb'] / main_run['file_mb']:.1f}): "
          f"peak memory x{long_text['peak_rss_mb'] / main_run['peak_rss_mb']:.2f}")  # fmt: skip
    print(f"align3gr, 4x rows (file x{main_run['file_mb'] / small['file_mb']:.1f}): "
          f"peak memory x{main_run['peak_rss_mb'] / small['peak_rss_mb']:.2f}")  # fmt: skip
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
