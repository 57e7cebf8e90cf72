"""`align3gr evaluate`: rank items for every user of a split and write `eval/SPLIT/STAGE/` (docs/DESIGN.md, Contracts).

`metrics.json`: `recall@K`, `ndcg@K`, `coverage@K` for each K, `valid_rate`, `num_users`, `beam_size`,
`exclude_history`, `split`, the decoder, catalogue size, speed. `predictions.jsonl`: `user_id`, `target`, `ranked`
(item IDs, best first), `scores` (log-probabilities of the SCIDs). With `text_examples`, `text_examples.jsonl`
holds generated texts.

With `exclude_history` (the default) the items the user interacted with before the target (valid: `items[:-2]`,
test: `items[:-1]`; all of them, not only the prompt's last `max_history`) are never ranked, as in RecBole's full
ranking (a repeated item is never a target after the build): the decoder ranks the other items.

Under `accelerate launch`, users are split across processes batch by batch (`align3gr.decode.sharded`), the
predictions gathered in user order and written and printed by the main process: the ranked lists and the metrics are
a single-process run's (scores to float precision), while `metrics.json` records the processes and the speed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from align3gr.config import config_to_dict
from align3gr.console import format_mapping, format_table
from align3gr.data.dataset import load_dataset
from align3gr.decode.sharded import rank_catalogue
from align3gr.evaluate.config import EvaluateConfig
from align3gr.evaluate.texts import text_examples
from align3gr.io import write_jsonl
from align3gr.metrics import METRICS_FILE, Prediction, compute_metrics, write_evaluation
from align3gr.models.loading import load_for_inference
from align3gr.scid.code_tables import load_code_tables
from align3gr.sft.tasks import evaluation_prompts, trained_prompting
from align3gr.stage_output import NOT_AN_EVALUATION, StageOutput, check_apart

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """The folder written, the metrics written to `metrics.json`, every user's prediction, the generated text
    examples, and whether this process is the main one (which prints them)."""

    path: Path
    metrics: dict
    predictions: list[Prediction]
    texts: list[dict[str, str]]
    main_process: bool = True

    def render(self) -> str:
        """What `align3gr evaluate` prints: Recall, NDCG and coverage per K, the run's figures, the text examples
        (nothing on the other processes)."""
        if not self.main_process:
            return ""
        metrics = self.metrics
        rows = [{"K": k, "Recall@K": metrics[f"recall@{k}"], "NDCG@K": metrics[f"ndcg@{k}"],
                 "coverage@K": metrics[f"coverage@{k}"]} for k in metrics["config"]["ks"]]  # fmt: skip
        title = f"\nEvaluation {self.path} ({metrics['split']}, {metrics['num_users']} users, {metrics['decoder']})"
        summary = {key: metrics[key] for key in ("valid_rate", "beam_size", "catalogue_size", "users_per_second")}
        texts = [
            f"\n[{row['user_id']}] {row['task']}\n  generated: {row['generated']}\n  reference: {row['reference']}"
            for row in self.texts
        ]
        return "\n".join([format_table(rows, title), format_mapping(summary), *texts])


def run_evaluate(
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    config: EvaluateConfig | None = None,
    scid_dir: str | Path | None = None,
) -> EvaluationResult:
    """Evaluate the model of `model_dir` (an `sft/` or DPO output folder, or any model folder with the code tokens)
    on `data_dir`, with the code tables of `scid_dir` (default: the copies in `model_dir`); writes `out_dir`."""
    from accelerate import PartialState

    start = time.perf_counter()
    config = config or EvaluateConfig()
    config.validate()
    check_apart(out_dir, {"--model": model_dir, "--data": data_dir, "--scid": scid_dir})
    output = StageOutput(Path(out_dir), distributed=True, holds=METRICS_FILE, lacks=NOT_AN_EVALUATION)
    state = PartialState(cpu=not torch.accelerator.is_available())
    model_dir = Path(model_dir)
    dataset = load_dataset(data_dir)
    item_codes, user_codes = load_code_tables(scid_dir or model_dir, dataset)
    model, tokenizer = load_for_inference(model_dir, config.dtype, config.trust_remote_code)
    model.to(state.device)
    trained_user_scid, seq_format = trained_prompting(model_dir)
    with_user_scid = trained_user_scid if config.with_user_scid is None else config.with_user_scid
    pairs = evaluation_prompts(
        dataset, item_codes, user_codes, config.split, tokenizer,
        with_user_scid=with_user_scid, seq_format=seq_format, paraphrase=config.paraphrase,
    )  # fmt: skip
    prompts = [ids for _, ids in pairs]
    log.info("%s: %d users of %s on %d process(es), decoder %s", model_dir, len(prompts), config.split,
             state.num_processes, config.decoder)  # fmt: skip
    seen = [dataset.seen_before(ex.user_id, config.split) for ex, _ in pairs] if config.exclude_history else None
    ranking_start = time.perf_counter()
    ranked = rank_catalogue(
        model, tokenizer, item_codes, prompts, "evaluate", "user",
        decoder=config.decoder, beam_size=config.beam_size, batch_size=config.batch_size, exclude=seen,
    )  # fmt: skip
    predictions = [
        Prediction(ex.user_id, ex.target, r.items, r.scores, r.returned, r.valid)
        for (ex, _), r in zip(pairs, ranked, strict=True)
    ]
    ranking_seconds = time.perf_counter() - ranking_start
    seconds = time.perf_counter() - start
    metrics = {
        **compute_metrics(predictions, config.ks, len(item_codes)),
        "beam_size": config.beam_size,
        "exclude_history": config.exclude_history,
        "split": config.split,
        "decoder": config.decoder,
        "catalogue_size": len(item_codes),
        "seconds": round(seconds, 2),
        "ranking_seconds": round(ranking_seconds, 2),
        "users_per_second": round(len(predictions) / ranking_seconds, 2),
        "processes": state.num_processes,
        "model": str(model_dir),
        "code_tables": str(scid_dir or model_dir),
        "config": config_to_dict(config),
    }
    texts: list[dict[str, str]] = []
    if state.is_main_process and config.text_examples:
        texts = text_examples(
            model, tokenizer, dataset, item_codes, user_codes, config.split, config.text_examples,
            with_user_scid=with_user_scid, max_new_tokens=config.max_new_tokens,
        )  # fmt: skip

    def write(folder: Path) -> None:
        write_evaluation(folder, metrics, predictions)
        if texts:
            write_jsonl(folder / "text_examples.jsonl", texts)

    output.publish(write)
    return EvaluationResult(output.path, metrics, predictions, texts, state.is_main_process)
