"""The `align3gr` command: one subcommand per pipeline stage (`align3gr data build`, ...)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from align3gr.config import KeyValues, add_config_arguments, config_from_sources, read_yaml_mapping
from align3gr.console import Report, format_mapping, quiet_hub_kernel_warning, setup_logging
from align3gr.errors import Align3GRError
from align3gr.run_lock import stage_lock

log = logging.getLogger("align3gr")
LAUNCHER_HELP = (
    "Run the training and evaluation stages on several processes through this command, e.g. "
    "'accelerate launch --config_file accelerate_configs/deepspeed_zero2.yaml' (default: in this process)."
)
Argument = tuple[str, dict[str, Any]]
DATA: Argument = ("--data", {"required": True, "type": Path, "help": "Canonical dataset folder."})
VERSIONED_LIBRARIES = ("torch", "transformers", "trl", "peft")


def version_text() -> str:
    """What `align3gr --version` prints: the toolkit's version, then those of the libraries it trains with."""
    from importlib.metadata import PackageNotFoundError, version

    import align3gr

    lines = [f"align3gr {align3gr.__version__}"]
    for name in VERSIONED_LIBRARIES:
        try:
            lines.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            lines.append(f"{name} not installed")
    return "\n".join(lines)


class _PrintVersion(argparse.Action):
    """`--version`: print `version_text()` line by line (argparse's version action re-wraps text) and exit."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_text())
        parser.exit()


def _print(report: Report) -> None:
    """Print what a stage returned, where it renders anything (not on the helping processes of a launch)."""
    text = report.render()
    if text:
        print(text)


def _data_build_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The `source` and `data` options of `data build` (the `--option` pairs over the `source` section's)."""
    from align3gr.data.config import DataConfig, SourceConfig

    source = config_from_sources(SourceConfig, args.config, _overrides(args, SourceConfig))
    source.options = {**source.options, **(args.option or {})}
    return source, config_from_sources(DataConfig, args.config, _overrides(args, DataConfig))


def _data_build(args: argparse.Namespace, config: tuple[Any, Any]) -> None:
    from align3gr.data.build import build_dataset

    source, data = config
    _print(build_dataset(source.builder, source.source, args.out, data, source.options, overwrite=args.overwrite))


def _overrides(args: argparse.Namespace, cls: type) -> dict[str, object]:
    """The command-line values given for the fields of config class `cls`."""
    return {name: getattr(args, name) for name in cls.__dataclass_fields__ if getattr(args, name, None) is not None}


def _data_stats(args: argparse.Namespace) -> None:
    from align3gr.data.dataset import load_dataset

    dataset = load_dataset(args.data)
    print(format_mapping(dataset.statistics(), f"\nDataset {args.data} (valid)"))


def _data_export(args: argparse.Namespace) -> None:
    from align3gr.data.dataset import load_dataset
    from align3gr.io import read_json
    from align3gr.scid.code_tables import check_table, declared_sizes
    from data_builders.lcrec import export_lcrec

    dataset, codes, path = load_dataset(args.data), None, args.item_codes
    if path:
        sizes = declared_sizes(path.parent).get("item", ())
        codes = check_table(read_json(path), list(dataset.items), path, "item", sizes)
    written = export_lcrec(dataset, args.out, args.name, codes, path)
    print(f"Exported {args.data} as LC-Rec '{args.name}' to {args.out}: " + ", ".join(p.name for p in written))


def _embed(args: argparse.Namespace, config: Any) -> None:
    from align3gr.embed.stage import run_embed

    _print(run_embed(args.data, args.out, config))


def _tokenize(args: argparse.Namespace, config: Any) -> None:
    from align3gr.tokenize.stage import run_tokenize

    _print(run_tokenize(args.data, args.embeddings, args.out, config))


def _evaluate(args: argparse.Namespace, config: Any) -> None:
    from align3gr.evaluate.stage import run_evaluate

    _print(run_evaluate(args.model, args.data, args.out, config, scid_dir=args.scid))


def _baselines(args: argparse.Namespace, config: Any) -> None:
    from align3gr.baselines.stage import run_baselines

    _print(run_baselines(args.data, args.out, config, args.embeddings))


def _sft(args: argparse.Namespace, config: Any) -> None:
    from align3gr.sft.stage import run_sft

    _print(run_sft(args.data, args.scid, args.out, config))


def _dpo_configs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The `dpo` options and the valid check's `evaluate` options (the `--config` file's section, if any)."""
    from align3gr.dpo.config import DPOStageConfig
    from align3gr.evaluate.config import EvaluateConfig

    config = config_from_sources(DPOStageConfig, args.config, _overrides(args, DPOStageConfig))
    with_evaluate = args.config is not None and isinstance(read_yaml_mapping(args.config).get("evaluate"), dict)
    return config, config_from_sources(EvaluateConfig, args.config) if with_evaluate else EvaluateConfig()


def _dpo(args: argparse.Namespace, config: tuple[Any, Any]) -> None:
    from align3gr.dpo.stage import run_dpo

    dpo, evaluate = config
    _print(run_dpo(args.data, args.start, args.out, dpo, eval_dir=args.eval_dir, evaluate=evaluate))


def _pipeline(args: argparse.Namespace) -> None:
    from align3gr.pipeline.config import training_arg_overrides
    from align3gr.pipeline.run import run_pipeline
    from align3gr.pipeline.seeds import parse_seeds, run_seeds
    from align3gr.pipeline.seeds_report import seeds_text
    from align3gr.pipeline.summary import summary_text

    overrides = training_arg_overrides(args.training_arg or {})
    if args.seeds is not None:
        seeds = parse_seeds(args.seeds)
        summary = run_seeds(args.config, seeds, args.run_dir, args.launcher, args.skip_unmet, overrides)
        print("\n" + seeds_text(summary))
        print(f"\nseeds.json and seeds.md in {summary['run_dir']}")
        return
    summary = run_pipeline(args.config, args.run_dir, overrides, launcher=args.launcher, skip_unmet=args.skip_unmet)
    print("\n" + summary_text(summary))
    print(f"\nsummary.json and summary.md in {summary['run_dir']}")


def _compare(args: argparse.Namespace) -> None:
    from align3gr.pipeline.compare import Side, compare, compare_text, default_output, write_comparison

    a, b = Side.of(args.run_a, args.stage_a), Side.of(args.run_b, args.stage_b)
    result = compare(a, b, test=args.test, unit=args.unit, alpha=args.alpha)
    print("\n" + compare_text(result))
    paths = write_comparison(result, args.out or default_output(a, b, args.test, args.unit))
    print(f"\n{paths[0]} and {paths[1]}")


def _push(args: argparse.Namespace) -> None:
    from align3gr.hub.push import push_run

    _print(push_run(args.run, args.stage, repo_id=args.repo_id, to_folder=args.to_folder, private=args.private,
                    dtype=args.dtype, with_titles=args.with_titles))  # fmt: skip


def _recommend(args: argparse.Namespace) -> None:
    from align3gr.hub.recommend import run_recommend

    result = run_recommend(
        args.model, user=args.user, history=args.history, history_titles=args.history_titles, data=args.data,
        k=args.k, exclude_seen=args.exclude_seen, beam_size=args.beam_size, revision=args.revision,
        trust_remote_code=args.trust_remote_code,
    )  # fmt: skip
    print(result.to_json() if args.json else result.render())


def _ablate(args: argparse.Namespace) -> None:
    from align3gr.pipeline.ablation import ladder_text, run_ablation
    from align3gr.pipeline.config import training_arg_overrides
    from align3gr.pipeline.seeds import parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds is not None else (0,)
    overrides = training_arg_overrides(args.training_arg or {})
    ladder = run_ablation(args.config, args.run_dir, args.launcher, seeds, args.skip_unmet, overrides)
    print("\n" + ladder_text(ladder))
    print(f"\nladder.json, ladder.md and ladder.png in {ladder['run_dir']}/ablation")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options `pipeline` and `ablate` share: how stages are launched, what to do with unmet needs, and trainer
    arguments added to the config."""
    parser.add_argument("--launcher", help=LAUNCHER_HELP)
    parser.add_argument(
        "--skip-unmet",
        action="store_true",
        help="Leave out the stages whose input the data lacks (the RF-DPO stages without feedback levels, SFT task "
        "user_align without user profiles) and say so in the summary, instead of stopping before any work with the "
        "list of unmet needs.",
    )
    parser.add_argument(
        "--training-arg", action=KeyValues, metavar="[SECTION.]KEY=VALUE",
        help="A trainer argument added to the `training_args` of the sft and dpo sections, or of one section with "
        "SECTION sft, dpo or unisid (tokenize's unisid_options), e.g. report_to=tensorboard. Repeatable.",
    )  # fmt: skip


def _add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The runs, stages and test options of `compare`."""
    from align3gr.pipeline.compare import TESTS, UNITS

    parser.add_argument("run_a", type=Path, help="Run folder A (holding seeds.json).")
    parser.add_argument("run_b", type=Path, help="Run folder B, e.g. the baseline config's (may be A itself).")
    parser.add_argument("--stage-a", help="Evaluated stage of A (default: its last model).")
    parser.add_argument("--stage-b", help="Evaluated stage of B (default: its last model; or popular, sasrec).")
    parser.add_argument("--test", choices=list(TESTS), default="t", help="Paired t-test or Wilcoxon "
                        "signed-rank test, two-sided.")  # fmt: skip
    parser.add_argument("--unit", choices=UNITS, default="users", help="Pair users (each one's "
                        "metric averaged over the seeds; default) or the per-seed means.")  # fmt: skip
    parser.add_argument("--alpha", type=float, default=0.05, help="Significance level of the last column.")
    parser.add_argument(
        "--out", type=Path, help="Output path without suffix (default: RUN_A/compare/A_vs_B_TEST_UNIT)."
    )


def _add_stage_command(
    commands: argparse._SubParsersAction,
    name: str,
    help_text: str,
    func: Callable[[argparse.Namespace, Any], None],
    config_class: type | None,
    *,
    out: str,
    config: str,
    inputs: Sequence[Argument] = (DATA,),
    options: Sequence[Argument] = (),
    only: Collection[str] | None = None,
    configure: Callable[[argparse.Namespace], Any] | None = None,
) -> None:
    """A stage's subcommand: its `inputs`, `--out`, its `options`, `--config`, then one flag per field of
    `config_class` (or of `only`), so every stage reads its folders and options the same way. `func` runs on what
    `configure` reads (default: the `config_class` options of `--config` and the flags), read before the run folder
    is locked. Without `config_class` (another command was named) the subcommand is only listed."""
    parser = commands.add_parser(name, help=help_text)
    if config_class is None:
        return
    for flag, kwargs in inputs:
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--out", required=True, type=Path, help=out)
    for flag, kwargs in options:
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--config", type=Path, help=config)
    add_config_arguments(parser, config_class, only=only)
    if configure is None:

        def configure(args: argparse.Namespace) -> Any:
            return config_from_sources(config_class, args.config, _overrides(args, config_class))

    parser.set_defaults(func=func, configure=configure, locks_out=True)


def _named_commands(argv: Sequence[str]) -> set[str]:
    """The command a command line names (its first argument that is not a flag: none of the flags before a
    command takes a value), as a set of none or one."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return set() if first is None else {first}


def build_parser(options_of: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The command line of every command, with the options of the commands `options_of` (default: all); the others
    are listed with their help. A stage's config classes import torch and transformers: ten seconds that
    `align3gr --help`, `align3gr data` and a launched evaluation need not spend."""

    def wanted(name: str) -> bool:
        return options_of is None or name in options_of

    def config_class(name: str, module: str, attribute: str) -> Any:
        return getattr(importlib.import_module(module), attribute) if wanted(name) else None

    parser = argparse.ArgumentParser(prog="align3gr", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    parser.add_argument("--version", action=_PrintVersion, help="Print the versions of align3gr, torch, "
                        "transformers, trl and peft, and exit.")  # fmt: skip
    stages = parser.add_subparsers(dest="stage", required=True)

    data = stages.add_parser("data", help="Build, check and export canonical datasets.")
    data_commands = data.add_subparsers(dest="command", required=True)
    build = data_commands.add_parser("build", help="Turn a raw dataset into the canonical format.")
    build.add_argument("--out", required=True, type=Path, help="Output folder of the canonical dataset.")
    build.add_argument("--config", type=Path, help="YAML file with `source:` and `data:` sections of these options.")
    build.add_argument("--option", action=KeyValues, metavar="KEY=VALUE", help="Builder-specific option (repeatable).")
    build.add_argument(
        "--overwrite", action="store_true", help="Replace a folder holding another dataset (never one of other files)."
    )
    for section in ("SourceConfig", "DataConfig"):
        if (data_class := config_class("data", "align3gr.data.config", section)) is not None:
            add_config_arguments(build, data_class)
    build.set_defaults(func=_data_build, configure=_data_build_configs, locks_out=True)

    stats = data_commands.add_parser("stats", help="Validate a canonical dataset and print its statistics.")
    stats.add_argument("data", type=Path)
    stats.set_defaults(func=_data_stats)

    export = data_commands.add_parser("export", help="Write a canonical dataset in another format.")
    export.add_argument("--format", choices=["lcrec"], default="lcrec")
    export.add_argument("--data", required=True, type=Path, help="Canonical dataset folder.")
    export.add_argument("--out", required=True, type=Path, help="Output folder.")
    export.add_argument("--name", required=True, help="Dataset name X of the X.inter.json files.")
    export.add_argument("--item-codes", type=Path, help="scid/item_codes.json to export as X.index.json.")
    export.set_defaults(func=_data_export)

    _add_stage_command(
        stages, "embed", "Semantic and collaborative embeddings of items and users.", _embed,
        config_class("embed", "align3gr.embed.config", "EmbedConfig"),
        out="Output folder (embeddings/).", config="YAML file with an `embed:` section of these options.",
    )  # fmt: skip
    _add_stage_command(
        stages, "tokenize", "Train the dual SCID tokenizer (or UniSID for items) and write the code tables.",
        _tokenize, config_class("tokenize", "align3gr.tokenize.config", "TokenizeConfig"),
        inputs=[DATA, ("--embeddings", {"type": Path,
                                        "help": "Output folder of `align3gr embed` (the dual tokenizer's input)."})],
        out="Output folder (scid/).", config="YAML file with a `tokenize:` section of these options.",
    )  # fmt: skip
    _add_stage_command(
        stages, "sft", "Add the SCID tokens to an LLM and train it on the Figure 3 tasks.", _sft,
        config_class("sft", "align3gr.sft.config", "SFTStageConfig"),
        inputs=[DATA, ("--scid", {"required": True, "type": Path, "help": "Output folder of `align3gr tokenize`."})],
        out="Output folder (sft/).", config="YAML file with an `sft:` section of these options.",
    )  # fmt: skip
    _add_stage_command(
        stages, "evaluate", "Rank items with constrained beam search; Recall/NDCG@K.", _evaluate,
        config_class("evaluate", "align3gr.evaluate.config", "EvaluateConfig"),
        inputs=[("--model", {"required": True, "type": Path, "help": "Model folder (sft/ or a DPO stage's output)."}),
                DATA],
        out="Output folder (a pipeline run's: eval/SPLIT/STAGE/).",
        options=[("--scid", {"type": Path, "help": "Folder of the code tables (default: the copies in --model)."})],
        config="YAML file with an `evaluate:` section of these options.",
    )  # fmt: skip
    _add_stage_command(
        stages, "baselines", "Most-popular and collaborative-encoder (SASRec-style) full rankings, scored as evaluate.",
        _baselines, config_class("baselines", "align3gr.evaluate.config", "EvaluateConfig"),
        inputs=[DATA, ("--embeddings", {"type": Path, "help": "Output folder of `align3gr embed` (for sasrec)."})],
        out="Output folder (one subfolder per baseline).",
        config="YAML file with an `evaluate:` section (split, ks, ...).",
        only=("split", "beam_size", "exclude_history", "ks", "batch_size"),
    )  # fmt: skip
    _add_stage_command(
        stages, "dpo", "Progressive Softmax-DPO: self-play then real-feedback stages.", _dpo,
        config_class("dpo", "align3gr.dpo.config", "DPOStageConfig"),
        inputs=[DATA,
                ("--start", {"required": True, "type": Path, "help": "The model the first stage starts from (sft/)."})],
        out="Output folder (dpo/), one subfolder per stage.",
        options=[("--eval-dir", {"type": Path, "help": "Where valid metrics go (default: eval/ beside --out)."})],
        config="YAML file with a `dpo:` section of these options; its `evaluate:` section, if any, sets the valid "
               "split's evaluation after each stage.",
        configure=_dpo_configs,
    )  # fmt: skip

    pipeline = stages.add_parser("pipeline", help="Every stage on one config, reusing the stages that are up to date.")
    pipeline.add_argument("--config", required=True, type=Path, help="YAML with a section per stage.")
    pipeline.add_argument("--run-dir", type=Path, help="Run folder (default: runs/NAME for NAME.yaml).")
    pipeline.add_argument(
        "--seeds",
        help="Comma-separated run seeds, e.g. 0,1,2,3,4: the run once per seed S, the embed, tokenize, sft and dpo "
        "seeds shifted by S (the data seed kept: one dataset), S=0 being the run itself; writes seeds.json and "
        "seeds.md (mean and sample std per metric and stage).",
    )
    _add_run_options(pipeline)
    pipeline.set_defaults(func=_pipeline)

    comparison = stages.add_parser(
        "compare", help="Two `pipeline --seeds` runs (or two stages of one) with a paired significance test per metric."
    )
    if wanted("compare"):
        _add_compare_arguments(comparison)
    comparison.set_defaults(func=_compare)

    ablate = stages.add_parser("ablate", help="The Figure 4 ladder: Recall@10 as each alignment module is added.")
    ablate.add_argument("--config", required=True, type=Path, help="YAML with a section per stage (the full method).")
    ablate.add_argument("--run-dir", type=Path, help="Run folder, shared with `pipeline` (default: runs/NAME).")
    ablate.add_argument(
        "--seeds",
        help="Two or more comma-separated run seeds, e.g. 0,1,2: the ladder once per seed, training seeds shifted as "
        "in `pipeline --seeds` (whose folders it reuses: run that first, with the same config and options); the "
        "tables and ladder.png show each metric's mean and sample std.",
    )
    _add_run_options(ablate)
    ablate.set_defaults(func=_ablate)

    push = stages.add_parser("push", help="Publish a stage of a run (model, tokenizer, code tables, card) to the Hub.")
    push.add_argument("--run", required=True, type=Path, help="Run folder (runs/NAME).")
    push.add_argument("--stage", required=True, help="sft or a DPO stage name (sp_easy, ..., rf_hard).")
    push.add_argument("--repo-id", help="Hub repo to create or update (owner/name); with --to-folder, the card's name.")
    push.add_argument("--private", action="store_true", help="Create the Hub repo private.")
    push.add_argument("--to-folder", type=Path, help="Write the upload to this folder instead of the Hub (the "
                      "card names the model by --repo-id, else by this path).")  # fmt: skip
    push.add_argument("--dtype", help="Weights dtype of a merged adapter (default: the dtype it was evaluated in).")
    push.add_argument(
        "--with-titles",
        action="store_true",
        help="Publish the items' titles too (item_titles.json, "
        "for `recommend --history-titles`): they are the dataset's content, whose terms may forbid it.",
    )
    push.set_defaults(func=_push)

    recommend = stages.add_parser("recommend", help="The top K items for a user or a history, with titles and scores.")
    recommend.add_argument("--model", required=True, help="A run's sft/ or dpo/STAGE/, a published folder or a Hub "
                           "repo id.")  # fmt: skip
    recommend.add_argument("--revision", help="Hub revision (branch, tag or commit) of a repo id.")
    who = recommend.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="A user of the dataset: their history before the test target, as evaluated.")
    who.add_argument("--history", nargs="+", help="Item IDs, oldest first (comma- or space-separated).")
    who.add_argument("--history-titles", nargs="+", metavar="TITLE", help="Item titles, oldest first (any case).")
    recommend.add_argument("--data", type=Path, help="Canonical dataset folder (default: the run's data/).")
    recommend.add_argument("-k", type=int, default=10, help="How many items (default 10).")
    recommend.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                           help="Never recommend an item of the history (default: as the run's evaluation, its "
                                "exclude_history).")  # fmt: skip
    recommend.add_argument("--beam-size", type=int, help="Beam width (default: the evaluation's; at least K).")
    recommend.add_argument("--trust-remote-code", action="store_true", help="Run model code shipped with the model "
                           "or its base (a custom architecture): only for a source you trust.")  # fmt: skip
    recommend.add_argument("--json", action="store_true", help="Print a JSON list of {rank, item_id, title, score}.")
    recommend.set_defaults(func=_recommend)
    return parser


def _run_folder_lock(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The run-folder lock of a stage command writing `--out` (`align3gr.run_lock`); `pipeline` and `ablate` take
    their run folder's themselves."""
    if not getattr(args, "locks_out", False):
        return contextlib.nullcontext()
    return stage_lock(args.out, " ".join(["align3gr", args.stage, getattr(args, "command", "")]).strip())


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # the reader of the output left (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor fail flushing stdout at exit
        return 128 + signal.SIGPIPE


def _main(argv: list[str]) -> int:
    quiet_hub_kernel_warning()
    args = build_parser(_named_commands(argv)).parse_args(argv)
    setup_logging(args.verbose)
    try:
        configure = getattr(args, "configure", None)
        run = functools.partial(args.func, config=configure(args)) if configure else args.func  # options read first
        with _run_folder_lock(args):
            run(args)
    except Align3GRError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
