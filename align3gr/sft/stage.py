"""`align3gr sft`: extend the vocabulary with the SCID tokens and run the multi-task SFT of Figure 3.

`sft/` holds the model (full fine-tuning) or the LoRA adapter with the trained SCID rows, the tokenizer with the
added tokens, copies of `item_codes.json` and `user_codes.json`, `meta.json` (fingerprint of the inputs and the
resolved config, vocabulary sizes, example counts, task-A losses before and after training), `sft_config.yaml`
and `training_log.jsonl` (the trainer's log; its last rows, the closing evaluation of the kept model, hold `final_*`
metrics and that model's step, `model_step`); `load_for_inference` reads it alone. The folder is renamed into place
whole; a re-run with the same inputs and config is a no-op; checkpoints go to `sft.work/` beside it, from which a
killed run resumes, and so do the tokenized rows of the task mixture (`sft.work/rows/`), which a resumed run loads
instead of tokenizing again, and the trained model (`sft.work/final/`), which the re-run of a run stopped while
publishing it publishes as it is.
Every process of an `accelerate launch` calls `run_sft`; the main one builds the tiny model and writes the output.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import align3gr
from align3gr.config import config_to_dict
from align3gr.console import format_mapping, format_table
from align3gr.data.dataset import Dataset, load_dataset
from align3gr.devices import numerics
from align3gr.errors import ConfigError
from align3gr.io import sha256_file, sha256_json
from align3gr.models.loading import load_model_and_tokenizer
from align3gr.models.local import model_identity, require_full_model
from align3gr.models.lora import save_trained_rows_only
from align3gr.models.zero3 import check_adapter_partitioning
from align3gr.options import TINY
from align3gr.scid.code_tables import CODE_TABLES, load_code_tables
from align3gr.scid.tokens import scid_tokens
from align3gr.scid.vocabulary import extend_vocabulary, token_texts
from align3gr.seeding import seeded
from align3gr.sft.arguments import sft_arguments
from align3gr.sft.base_model import build_tiny_base, check_replaceable_base
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.data import TaskMixture, cached_rows, encode_examples, rows_dataset, trainer_rows
from align3gr.sft.lora import scid_lora_config
from align3gr.sft.probe import RankingProbe
from align3gr.sft.tasks import TaskBuilder, evaluation_prompts, load_templates
from align3gr.sft.trainer import checkpoint_step
from align3gr.stage_output import META_FILE, NOT_A_MODEL, StageOutput, check_apart
from align3gr.training import FINAL, LogsLastStep, logged, publish_model, republish_model
from align3gr.training_curves import CLOSING_PREFIX

log = logging.getLogger(__name__)
PROBE_BATCH = 32
CONFIG_FILE = "sft_config.yaml"
ROWS = "rows"
"""The work folder's cache of the task mixture's tokenized rows (`align3gr.sft.data.cached_rows`)."""


@dataclass
class SFTResult:
    """Where the stage wrote, its meta (see the module docstring), whether it was already up to date, and whether this
    process is the main one (which prints it)."""

    path: Path
    meta: dict
    up_to_date: bool
    main_process: bool = True

    def render(self) -> str:
        """What `align3gr sft` prints: examples per task, the model, steps and losses (nothing on the other
        processes)."""
        if not self.main_process:
            return ""
        meta = self.meta
        rows = [{"task": task, "examples": count} for task, count in meta["examples"].items()]
        state = "up to date, reused" if self.up_to_date else f"trained in {meta['seconds']:.1f}s"
        summary = {
            "base model": meta["base_model"],
            "adapter": "LoRA" if meta["adapter"] else "full model",
            "SCID tokens added": meta["vocabulary"]["scid_tokens"],
            "steps": f"{meta['steps']} (stopped early: valid stopped improving)"
            if meta.get("stopped_early")
            else meta["steps"],
            "training loss (first -> last log)": _change(meta["train_loss"]),
        }
        for name, loss in meta["seq_loss"].items():
            summary[f"{name} loss (start -> end)"] = _change(loss)
        if meta.get("best"):
            summary["kept checkpoint"] = ", ".join(f"{k} {v}" for k, v in meta["best"].items())
        return "\n".join(["\n" + format_table(rows, f"SFT {self.path} ({state})"), format_mapping(summary)])


def _change(loss: dict) -> str:
    """`start -> end` of a loss the meta records."""
    return f"{loss['start']:.3f} -> {loss['end']:.3f}"


def base_model_path(config: SFTStageConfig, out: Path) -> str:
    """The base model to load: the tiny model's folder beside the output, a local folder (absolute), or a Hub id."""
    if config.model == TINY:
        return str((out.parent / f"{out.name}_base").resolve())
    local = Path(config.model)
    return str(local.resolve()) if local.is_dir() else config.model


def fingerprint_of(config: SFTStageConfig, dataset: Dataset, scid: Path, base: str) -> str:
    """Hash of everything the output depends on: dataset, code tables, templates, base model and config. The tiny
    base is named, not located: it is built from the dataset and the config, so a moved run folder stays current."""
    local = Path(base)
    if config.model == TINY:
        model = TINY
    else:
        model = model_identity(require_full_model(local, "model")) if local.is_dir() else base
    return sha256_json(
        {
            "data": dataset.meta.get("fingerprint"),
            "codes": [sha256_file(scid / name) for name in CODE_TABLES],
            "templates": load_templates(),
            "model": model,
            "config": config_to_dict(config),
            "version": align3gr.__version__,
        }
    )


def _seq_rows(builder: TaskBuilder, tokenizer, config: SFTStageConfig) -> dict:
    """Task-A rows whose loss is reported: `eval_examples` sampled training rows and as many valid users."""
    train = list(TaskMixture(builder, ["seq"], config.eval_examples, config.seed))
    valid = evaluation_prompts(
        builder.dataset, builder.item_codes, builder.user_codes, "valid", tokenizer,
        with_user_scid=config.with_user_scid, seq_format=config.seq_format,
    )[: config.eval_examples]  # fmt: skip
    answers = ((prompt, builder.seq_answer_ids(tokenizer, ex.target)) for ex, prompt in valid)
    return {
        "train_seq": encode_examples(train, tokenizer, config.max_length, "Tokenizing train_seq"),
        "valid_seq": rows_dataset(((p + a, [0] * len(p) + [1] * len(a)) for p, a in answers), config.max_length),
    }


def scid_model(base: str, dataset: Dataset, item_codes: dict, user_codes: dict, config: SFTStageConfig):
    """(model, tokenizer, vocabulary sizes, SCID token ids): the base model loaded with its vocabulary extended by
    the SCID tokens, their rows initialised by `config.token_init` (from titles and profiles with `text`)."""
    model, tokenizer = load_model_and_tokenizer(
        base,
        dtype=config.dtype,
        attn_implementation=config.attn_implementation,
        trust_remote_code=config.trust_remote_code,
        load_in_4bit=config.load_in_4bit,
    )
    base_vocab_size = len(tokenizer)
    tokens = scid_tokens(item_codes, user_codes)
    texts = {}
    if config.token_init == "text":
        texts = token_texts(item_codes, {i: x.title for i, x in dataset.items.items()})
        texts |= token_texts(user_codes, {u: x.profile for u, x in dataset.users.items()})
    token_ids = extend_vocabulary(model, tokenizer, tokens, init=config.token_init, texts=texts)
    vocabulary = {
        "base_vocab_size": base_vocab_size,
        "scid_tokens": len(tokens),
        "embedding_rows": int(model.get_input_embeddings().weight.shape[0]),  # before any wrapping or sharding
    }
    return model, tokenizer, vocabulary, token_ids


def sft_trainer(
    model, tokenizer, token_ids, builder: TaskBuilder, arguments, train, evals: dict, config: SFTStageConfig
):
    """The SFT trainer on the stage's rows, prepared here (`trainer_rows`) rather than by TRL: LoRA on the SCID rows
    when `use_lora`, the valid ranking probe and its early stopping when `valid_users` is set."""
    from align3gr.sft.trainer import RankingEarlyStopping, SCIDSFTTrainer, needs_model_loss

    probe = None
    if config.valid_users:
        probe = RankingProbe.of_valid(
            builder, tokenizer, config.valid_users, config.valid_beam_size, PROBE_BATCH, config.seed, exclude=True
        )
    peft_config = None
    if config.use_lora:
        peft_config = scid_lora_config(
            model, token_ids, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules
        )
    eval_packing = arguments.packing if arguments.eval_packing is None else arguments.eval_packing
    callbacks = []
    if probe is not None and config.early_stopping_patience:
        callbacks.append(RankingEarlyStopping(config.early_stopping_patience))
    callbacks.append(LogsLastStep())  # after early stopping, whose decision it reads
    trainer = SCIDSFTTrainer(
        model=model,
        args=arguments,
        train_dataset=trainer_rows(train, arguments, arguments.packing),
        eval_dataset={name: trainer_rows(rows, arguments, eval_packing) for name, rows in evals.items()},
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        probe=probe,
        model_loss=needs_model_loss(model, config.use_lora),
    )
    save_trained_rows_only(trainer.model)
    return trainer


def run_sft(
    data_dir: str | Path, scid_dir: str | Path, out_dir: str | Path, config: SFTStageConfig | None = None
) -> SFTResult:
    """Train the SFT model of `data_dir` + `scid_dir` into `out_dir` (or reuse it); see the module docstring."""
    from accelerate import PartialState

    start = time.perf_counter()
    config = config or SFTStageConfig()
    config.validate()
    out, scid = Path(out_dir), Path(scid_dir)
    check_apart(out, {"--data": data_dir, "--scid": scid, "--model": config.model})
    if config.model == TINY:
        check_replaceable_base(Path(base_model_path(config, out)))
    output = StageOutput(out, distributed=True, holds=META_FILE, lacks=NOT_A_MODEL)
    arguments = sft_arguments(config, output.work, eval_steps=config.save_steps)  # sets up the process group first
    check_adapter_partitioning(config.use_lora, "sft.use_lora")
    state = PartialState()
    dataset = load_dataset(data_dir)
    item_codes, user_codes = load_code_tables(scid, dataset)
    builder = TaskBuilder(
        dataset, item_codes, user_codes, with_user_scid=config.with_user_scid, seed=config.seed,
        seq_format=config.seq_format, stream_stride=config.stream_stride, holdout=config.holdout_last,
    )  # fmt: skip
    base = base_model_path(config, out)
    fingerprint = fingerprint_of(config, dataset, scid, base)
    existing = output.current(fingerprint)
    if existing is not None:
        log.info("%s is up to date (same data, codes, model and config); nothing to do", out)
        return SFTResult(out, existing, True, state.is_main_process)

    resume = output.resume(fingerprint)
    published = republish_model(output, scid, CONFIG_FILE, config)
    if published is not None:
        log.info("%s: the model trained by a run stopped while publishing it is now published", out)
        return SFTResult(out, published, False, state.is_main_process)
    arguments.eval_on_start = resume is None  # a resumed run logged it; a second would count against patience
    with state.main_process_first():  # the main process builds the tiny base; the others then load it
        if state.is_main_process and config.model == TINY:
            build_tiny_base(
                dataset, base, config.tiny_vocab_size, config.tiny_hidden_size, config.tiny_layers, config.seed
            )

    with seeded(config.seed):
        model, tokenizer, vocabulary, token_ids = scid_model(base, dataset, item_codes, user_codes, config)
        examples = TaskMixture(builder, config.tasks, config.max_examples_per_task, config.seed, config.task_limits)
        with state.main_process_first():  # the main process tokenizes; the others load its rows
            train = cached_rows(examples, tokenizer, config.max_length, output.work / ROWS, "Tokenizing the mixture")
        if not len(train) and next(iter(examples), None) is None:
            raise ConfigError(
                f"sft.tasks {config.tasks} give no example on this dataset: holdout_last={config.holdout_last} may "
                "leave no training item before the held-out ones, or the tasks need texts the dataset lacks "
                "(profiles, intentions, preference statements)"
            )
        if not len(train):
            raise ConfigError(f"max_length={config.max_length}: no example of the mixture fits in it; raise it")
        evals = _seq_rows(builder, tokenizer, config)
        empty = [name for name, rows in evals.items() if not len(rows)]
        if empty:  # the rows longer than max_length are dropped: here every next-item row, the task SFT is for
            raise ConfigError(f"max_length={config.max_length}: no next-item (task A) row of {empty[0]} fits in it; "
                              "raise it")  # fmt: skip
        trainer = sft_trainer(model, tokenizer, token_ids, builder, arguments, train, evals, config)
        trainer.train(resume_from_checkpoint=resume)
        final = trainer.evaluate_kept()
        trainer.save_model(str(output.work / FINAL))
    state.wait_for_everyone()

    history = trainer.state.log_history
    meta = {
        "fingerprint": fingerprint,
        "base_model": base,
        "adapter": config.use_lora,
        "vocabulary": vocabulary,
        "examples": examples.counts,
        "train_rows": len(train),
        "steps": trainer.state.global_step,
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "distributed": {"type": state.distributed_type.value, "processes": state.num_processes},
        "seq_loss": {
            name: {"start": logged(history, f"eval_{name}_loss", 0), "end": final.get(f"{CLOSING_PREFIX}_{name}_loss")}
            for name in evals
        },
        "train_loss": {"start": logged(history, "loss", 0), "end": logged(history, "loss", -1)},
        "best": {
            "step": checkpoint_step(trainer.state.best_model_checkpoint),
            config.best_metric: trainer.state.best_metric,
        }
        if trainer.probe is not None
        else None,
        "config": config_to_dict(config),
        "align3gr_version": align3gr.__version__,
        "numerics": numerics(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    publish_model(output, scid, CONFIG_FILE, config, history, meta)
    return SFTResult(out, meta, False, state.is_main_process)
