"""`SCIDSFTTrainer`: TRL's SFTTrainer that ranks the valid users at each evaluation and, where it must or should,
takes the loss through the model's own output layer.

Ranking: each scheduled evaluation also runs a `RankingProbe` (beam search on a fixed valid sample) and reports its
metrics as `eval_valid_recall@K` / `eval_valid_ndcg@K`, so Transformers' best-checkpoint selection
(`metric_for_best_model`) and early stopping (`RankingEarlyStopping`) act on recommendation quality, not on a loss.
The closing evaluation of the kept model (`evaluate_kept`) logs its metrics as `final_*`, marked with that model's step.
The processes rank different users, so the probe runs on whole weights (TRL's `unwrap_model_for_generation`): under
ZeRO-3 each forward of the engine would gather them with a collective the other processes do not join.

Loss: TRL computes the SFT loss with a fused LM head that reads `lm_head.weight` (and `.bias`) directly. Under LoRA
with peft's trainable tokens, the output layer is a wrapper whose new SCID rows live in the adapter, not in that
weight, so the fused loss would never see or train them (and the wrapper has no `bias`). The Transformers loss calls
the output module, which applies the adapter's rows. The fused head also only pays for large vocabularies: it
projects through a `[4096, 32768]` float32 tile (512 MB) allocated on every forward and backward, whatever the
vocabulary; below 32,768 output rows the full logits are smaller than that tile, and the model's own loss is several
times faster (the tiny default: 2.6x per SFT run). The output module is applied to the answer positions only (the
last hidden states of the forward, gathered where a label follows), not to every prompt and padding position: on a
small model the output layer is most of the compute, and at a 7B model's 152k vocabulary the full logits of a batch
take gigabytes. Under ZeRO-3 the output module called on its own gathers its partitioned weights through its
DeepSpeed hooks as inside the forward (the losses of the model's own loss to float rounding, on two CPU
processes).
"""

from __future__ import annotations

import torch
from transformers import EarlyStoppingCallback, Trainer
from trl import SFTTrainer
from trl.models.utils import unwrap_model_for_generation

from align3gr.errors import ConfigError
from align3gr.sft.probe import RankingProbe
from align3gr.training import ResumesWhereItStopped
from align3gr.training_curves import CLOSING_PREFIX, MODEL_STEP

FUSED_HEAD_TILE = 32768
"""Vocabulary columns of TRL's fused LM-head tile (`trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE`)."""
PROBE_NAME = "valid"
PROBE_PREFIX = f"eval_{PROBE_NAME}_"
"""The probe's metrics in a scheduled evaluation; the closing one (`SCIDSFTTrainer.evaluate_kept`) names them
`final_valid_*`."""


def checkpoint_step(checkpoint: str | None) -> int | None:
    """The step of a `checkpoint-N` folder name."""
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else None


LOGIT_TRANSFORMS = ("final_logit_softcapping", "logits_scaling", "logit_scale")
"""Config attributes of models whose forward changes the logits after the output layer: Gemma 2/3's soft-capping,
Granite's scaling, Cohere's logit scale (1 or unset: none)."""
MODEL_LOSS_ARGS = {"loss_type": "nll", "label_smoothing_factor": 0.0}
"""TRL options of the loss that the output-layer loss (`needs_model_loss`) does not implement, and their neutral
values."""


def transforms_logits(config) -> bool:
    """Whether the model's forward changes its logits after the output layer (`LOGIT_TRANSFORMS`), in its config or
    its text config (a vision-language model's)."""
    configs = [c for c in (config, getattr(config, "text_config", None)) if c is not None]
    return any(getattr(c, name, None) not in (None, 1, 1.0) for c in configs for name in LOGIT_TRANSFORMS)


def needs_model_loss(model, use_lora: bool) -> bool:
    """Whether SFT must (LoRA trainable tokens) or should (a vocabulary smaller than the fused tile) take the loss
    through the model's output layer."""
    return use_lora or model.get_output_embeddings().weight.shape[0] < FUSED_HEAD_TILE


class ClosingEvaluationLog(Trainer):
    """Logs of the closing evaluation (`SCIDSFTTrainer.evaluate_kept`) named `final_*` and marked with the kept
    model's step (`MODEL_STEP`) before the history and the callbacks (TensorBoard, trackers) receive them. Placed
    after SFTTrainer in a trainer's bases, so it sees the `eval_*` metrics TRL's `log` adds whatever the prefix."""

    closing_step: int | None = None
    """The kept model's step while its closing evaluation runs, else None."""

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.closing_step is not None:
            logs = {**_closing(logs), MODEL_STEP: self.closing_step}
        super().log(logs, start_time)


class SCIDSFTTrainer(ResumesWhereItStopped, SFTTrainer, ClosingEvaluationLog):
    """SFTTrainer with a ranking probe at each evaluation and, with `model_loss`, the output module's loss."""

    def __init__(self, *args, probe: RankingProbe | None = None, model_loss: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.probe = probe
        self.model_loss = model_loss
        self._ranking: dict[str, float] = {}
        self.logits_from_model = model_loss and transforms_logits(self.accelerator.unwrap_model(self.model).config)
        changed = [name for name, value in MODEL_LOSS_ARGS.items() if model_loss and getattr(self.args, name) != value]
        if changed:
            raise ConfigError(
                f"sft.training_args {changed[0]}={getattr(self.args, changed[0])!r}: the next-token loss here is "
                f"computed through the model's output layer (LoRA, or a vocabulary under {FUSED_HEAD_TILE} rows), "
                "which does not implement it; leave it unset"
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.model_loss:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = {**inputs, "use_cache": False}  # as TRL's loss: no KV cache, whatever `use_cache` says
        if self.aux_loss_enabled:
            inputs["output_router_logits"] = True
        labels = inputs["labels"][:, 1:]
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        answers = labels != -100
        if self.logits_from_model:  # the model's own logits at the answer positions: its transform applied
            positions = answers.any(0).nonzero().flatten()
            outputs = model(**forward, logits_to_keep=positions)
            kept = answers[:, positions]
            logits, targets = outputs.logits[kept], labels[:, positions][kept]
        else:
            outputs = model(**forward, output_hidden_states=True, logits_to_keep=1)
            head = self.accelerator.unwrap_model(model).get_output_embeddings()
            logits, targets = head(outputs.hidden_states[-1][:, :-1][answers]), labels[answers]
        losses = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
        if num_items_in_batch is None:
            loss = losses.mean()
        else:
            loss = losses.sum() / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        if self.aux_loss_enabled:  # as TRL's loss: the router's load-balancing term, per accumulated micro-batch
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss / steps
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """An evaluation on every eval dataset (scheduled, or the closing one) first ranks the probe's users; the
        ranking joins the metrics of the first eval dataset's evaluation, so the log and the callbacks (best
        checkpoint, early stopping) see it."""
        if self.probe is not None and eval_dataset is None:
            checkpointing = self.args.activation_checkpointing_kwargs
            with unwrap_model_for_generation(
                self.model_wrapped, self.accelerator, gradient_checkpointing_kwargs=checkpointing
            ) as model:
                ranking = self.probe(model)
            self._ranking = {f"{metric_key_prefix}_{PROBE_NAME}_{k}": v for k, v in ranking.items()}
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def kept_step(self) -> int:
        """The step of the model training ended with: the best checkpoint's when Transformers loaded it at the end,
        else the last step's."""
        best = checkpoint_step(self.state.best_model_checkpoint)
        return best if self.args.load_best_model_at_end and best is not None else self.state.global_step

    def evaluate_kept(self) -> dict[str, float]:
        """The closing evaluation of the kept model, its metrics named `final_*` (TRL's `eval_*` additions too) and
        its logs marked with that model's step (`ClosingEvaluationLog`): Transformers logs them at the last step,
        which the log, the curves and the trackers must not take for a measure of the last step's model."""
        self.closing_step = self.kept_step()
        try:
            return _closing(self.evaluate(metric_key_prefix=CLOSING_PREFIX))
        finally:
            self.closing_step = None

    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        output.metrics.update(self._ranking)
        self._ranking = {}
        return output


def _closing(metrics: dict) -> dict:
    """`metrics` with every `eval_` key named `final_`: TRL's `log` adds its own metrics as `eval_*` whatever the
    evaluation's prefix."""
    return {CLOSING_PREFIX + k.removeprefix("eval") if k.startswith("eval_") else k: v for k, v in metrics.items()}


class RankingEarlyStopping(EarlyStoppingCallback):
    """Transformers' early stopping on the probe's metric, quiet on the evaluations without it: a scheduled evaluation
    runs one evaluation per eval dataset and the ranking rides on the first; the base class skips the others too, but
    warns on each that early stopping is disabled."""

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        if args.metric_for_best_model in metrics:
            super().on_evaluate(args, state, control, metrics, **kwargs)
