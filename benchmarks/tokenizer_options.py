"""On/off effect of every tokenizer regulariser and addition of the README's table (issue 14), on an existing run.

    python benchmarks/tokenizer_options.py --run runs/ml100k [--work DIR] [--variants a,b,...] [--sft] [--list]

Each variant is the run's tokenize section (`config.yaml`) plus a few options (`--list` prints them); the `default`
row, the run's own config, always comes first. For every variant `run_tokenize` trains on the run's `data/` and
`embeddings/` into `WORK/VARIANT/scid` (kept when its `report.json` has the same config and data, so a killed run
continues), and the table gives, of the raw item codes (before collision resolution): the collision rate, the SID
entropy (QuaSID 5.1.3) and its fraction of ln N, and per level the utilisation, perplexity and top-1 load (AdaSID
5.1.2) and the V-measure against the category path (UniSID 4.1); the users' collision rate; the tokenizer's
seconds. With `--sft`, the run's SFT section trains on each variant's codes (`WORK/VARIANT/sft`, kept when up to
date) and `run_evaluate` with the run's evaluate section ranks the valid split (`WORK/VARIANT/eval_valid`): valid
Recall@10 and NDCG@10. A variant without user codes (`dual: false`) trains the SFT without the user-alignment task
and the user's SCID in prompts, like the item-only rungs of `align3gr ablate`; a variant whose code tables are
byte-identical to an earlier row's takes that row's SFT metrics (the same training run). The table also goes to
`WORK/tokenizer_options.md` and `.json`.

On MovieLens-100K (1,349 items, 256 codes a level) the default's raw codes and those with the papers' regularisers
are unique and use every code of every level: collisions, entropy and utilisation cannot tell those apart there;
perplexity, top-1 load and the SFT's valid metrics can (without dead-code revival, level 1 uses 45 codes).

Wall time on 2 CPU cores: ~1.5-4 min per variant for the tokenizer alone (DAS's alignment: 17 min), ~12 min more
per variant with `--sft`.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import yaml

from align3gr.config import config_from_sources, config_to_dict
from align3gr.console import format_table, markdown_table, setup_logging
from align3gr.errors import ConfigError
from align3gr.evaluate.stage import run_evaluate
from align3gr.io import atomic_write_json, atomic_write_text, read_json, sha256_file
from align3gr.models.loading import META_FILE
from align3gr.pipeline.config import PipelineConfig, load_pipeline_config
from align3gr.scid.code_tables import CODE_TABLES
from align3gr.sft.stage import run_sft
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.stage import run_tokenize

log = logging.getLogger("tokenizer_options")

VARIANTS: dict[str, dict] = {
    "default": {},
    # Align3GR Eq. 1-2: the U2I behaviour loss and the switch of weights
    "no_u2i": {"u2i": False},
    # DAS Eq. 5-10: multi-view alignment
    "das": {"das": True},
    # QuaSID Eq. 8-13: Hamming-guided margin repulsion
    "hamr": {"hamr": True},
    # AdaSID Eq. 2-13: adaptive collision regulation; its collaborative term (Eq. 12, 14) off; Eq. 13 as a sum
    "adasid": {"adasid": True},
    "adasid_no_cf": {"adasid": True, "adasid_options": {"lambda_cf_max": 0.0}},
    "adasid_sum": {"adasid": True, "adasid_options": {"reduction": "sum"}},
    # HaMR and AdaSID on the user RQ-VAE too (the toolkit's addition), with and without
    "hamr_adasid": {"hamr": True, "adasid": True},
    "no_regularize_users": {"hamr": True, "adasid": True, "regularize_users": False},
    # QuaSID Eq. 6-8: the contrastive loss on co-engaged items, its target masks, and QuaSID's objective (Eq. 14)
    "quasid_cl": {"quasid_cl": True},
    "quasid_mask_related": {"quasid_cl": True, "quasid_cl_options": {"mask": "related"}},
    "quasid_mask_none": {"quasid_cl": True, "quasid_cl_options": {"mask": "none"}},
    "quasid_objective": {"dual": False, "use_cf": False, "u2i": False, "hamr": True, "quasid_cl": True},
    # DAS 2.2, Eq. 3-4: the co-trained CF model feeding the tokenizer input; biased (Table 1); Eq. 3-4 as sums;
    # DAS's total loss (2.3)
    "das_cf": {"das_cf": True},
    "das_cf_biased": {"das_cf": True, "das_cf_options": {"debias": False}},
    "das_cf_sum": {"das_cf": True, "das_cf_options": {"reduction": "sum"}},
    "das_objective": {"das": True, "das_cf": True, "use_cf": False, "u2i": False},
    # the toolkit's additions beyond the papers
    "no_revival": {"revive_dead_codes": False},
    "no_disambiguation": {"disambiguation_level": False},
    "sc_dim_64": {"sc_dim": 64},
}


def describe(overrides: dict) -> str:
    """The overrides as flow YAML without the outer braces (`das_cf: true, das_cf_options: {debias: false}`)."""
    if not overrides:
        return "none (the run's config)"
    return yaml.safe_dump(overrides, default_flow_style=True, sort_keys=False, width=1000).strip()[1:-1]


def variant_configs(base: TokenizeConfig) -> dict[str, TokenizeConfig]:
    """Every variant's config: the run's tokenize config with its overrides, an option mapping merged into the
    run's; built before any work, so an unknown or invalid option fails at once as a ConfigError naming the variant."""
    configs = {}
    for name, overrides in VARIANTS.items():
        values = config_to_dict(base)
        for option, value in overrides.items():
            values[option] = values[option] | value if isinstance(values.get(option), dict) else value
        try:
            configs[name] = config_from_sources(TokenizeConfig, overrides=values)
        except ConfigError as err:
            raise ConfigError(f"variant {name!r}: {err}") from None
    return configs


def tokenize_variant(run: Path, scid: Path, config: TokenizeConfig) -> dict:
    """The tokenizer report of `config`: `scid/report.json` when made with this config on the run's data, else a
    fresh `run_tokenize`; a ConfigError it raises (a code prefix over capacity without `disambiguation_level`) is
    `{"error": message}`."""
    path = scid / "report.json"
    if path.is_file():
        report = read_json(path)
        fingerprint = read_json(run / "data" / "meta.json").get("fingerprint")
        if report["config"] == config_to_dict(config) and report["data_fingerprint"] == fingerprint:
            return report
    try:
        return run_tokenize(run / "data", run / "embeddings", scid, config)
    except ConfigError as err:
        return {"error": str(err)}


def sft_valid(run: Path, folder: Path, run_config: PipelineConfig, tokenize: TokenizeConfig) -> dict:
    """Valid Recall@10, NDCG@10 and seconds of the run's SFT trained on `folder/scid` (`run_sft` keeps an up-to-date
    model); the evaluation is kept when newer than the model and made with the same options."""
    sft = run_config.sft
    if not tokenize.dual:  # no user codes
        tasks = [task for task in sft.tasks if task != "user_align"]
        sft = run_config.replace("sft", tasks=tasks, with_user_scid=False).sft
    evaluate = run_config.replace("evaluate", split="valid").evaluate
    model = run_sft(run / "data", folder / "scid", folder / "sft", sft)
    path = folder / "eval_valid" / "metrics.json"
    fresh = path.is_file() and path.stat().st_mtime > (model.path / META_FILE).stat().st_mtime
    if fresh and read_json(path)["config"] == config_to_dict(evaluate):
        metrics = read_json(path)
    else:
        metrics = run_evaluate(model.path, run / "data", path.parent, evaluate).metrics
    return {
        "valid recall@10": metrics["recall@10"],
        "valid ndcg@10": metrics["ndcg@10"],
        "sft+eval s": round(model.meta["seconds"] + metrics["seconds"], 1),
    }


def codes_key(scid: Path, tokenize: TokenizeConfig) -> str:
    """What the SFT of a variant depends on besides the run: its code tables' bytes and whether it has user codes."""
    return " ".join([*(sha256_file(scid / name) for name in CODE_TABLES), str(tokenize.dual)])


def per_level(levels: list[dict], key: str, form: str = "{:.3f}") -> str:
    """One statistic of every level, `0.996 / 0.871 / 0.412`."""
    return " / ".join(form.format(level[key]) for level in levels)


def table_row(name: str, report: dict, valid: dict | None) -> dict:
    """The variant's row: its overrides, the raw item codes' statistics, the users' collision rate, seconds, and the
    valid metrics of `--sft`; an error in place of the statistics when the tokenizer raised one."""
    row: dict = {"variant": name, "changes": describe(VARIANTS[name])}
    if "error" in report:
        return row | {"item collisions": f"error: {report['error']}"}
    items, users = report["items"], report["users"]
    return row | {
        "item collisions": items["collisions"]["collision_rate_before"],
        "SID entropy": items["sid_entropy"],
        "/ ln N": items["sid_entropy"] / items["resolved"]["sid_entropy"],  # the unique codes' entropy is ln N
        "utilisation": per_level(items["levels"], "utilisation"),
        "perplexity": per_level(items["levels"], "perplexity", "{:.1f}"),
        "top-1 load": per_level(items["levels"], "top1_load", "{:.4f}"),
        "V-measure": per_level(items["v_measure"], "v_measure"),
        "user collisions": users["collision_rate"] if users["levels"] else "no users",
        "tokenize s": report["seconds"],
        **(valid or {}),
    }


def write_results(work: Path, run: Path, rows: list[dict]) -> None:
    """`tokenizer_options.json` (the rows and every variant's overrides) and `tokenizer_options.md` (the table)."""
    atomic_write_json(work / "tokenizer_options.json", {"run": str(run), "variants": VARIANTS, "rows": rows})
    header = list(rows[0])
    table = markdown_table(header, [[row.get(column, "") for column in header] for row in rows])
    atomic_write_text(work / "tokenizer_options.md", f"# Tokenizer options on `{run}`\n\n{table}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/ml100k"), help="A run folder of `align3gr pipeline`.")
    parser.add_argument("--work", type=Path, help="Output folder (default: RUN/tokenizer_options).")
    parser.add_argument("--variants", help="Comma-separated variants (default: all); `default` is always added.")
    parser.add_argument("--sft", action="store_true", help="Also train the run's SFT on each variant's codes.")
    parser.add_argument("--list", action="store_true", help="Print the variants and their overrides, and exit.")
    args = parser.parse_args()
    if args.list:
        print(format_table([{"variant": name, "changes": describe(o)} for name, o in VARIANTS.items()]))
        return
    names = list(dict.fromkeys(["default", *(args.variants.split(",") if args.variants else VARIANTS)]))
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; --list prints them")
    setup_logging()
    try:
        run_config = load_pipeline_config(args.run / "config.yaml")
        configs = variant_configs(run_config.tokenize)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    work = args.work or args.run / "tokenizer_options"
    work.mkdir(parents=True, exist_ok=True)
    rows, trained = [], {}
    for name in names:
        log.info("%s: start (%s)", name, describe(VARIANTS[name]))
        start = time.perf_counter()
        report = tokenize_variant(args.run, work / name / "scid", configs[name])
        valid = None
        if args.sft and "error" not in report:
            key = codes_key(work / name / "scid", configs[name])
            if key in trained:  # the same code tables: the same SFT run, not trained again
                same, valid = trained[key]
                valid = valid | {"sft+eval s": f"codes of {same}"}
            else:
                valid = sft_valid(args.run, work / name, run_config, configs[name])
                trained[key] = (name, valid)
        rows.append(table_row(name, report, valid))
        write_results(work, args.run, rows)
        log.info("%s: done in %.0f s", name, time.perf_counter() - start)
    print("\n" + format_table(rows, f"Tokenizer options on {args.run} (raw item codes, before collision resolution)"))


if __name__ == "__main__":
    main()
