"""`SoftmaxDPOTrainer`: TRL's `DPOTrainer` with the Softmax-DPO loss of Align3GR (Eq. 3).

Rows are `prompt` (text), `chosen` (text) and `rejected` (a list of K texts), tokenized with the same
`encode_prompt` / `encode_completion` as SFT and decoding, or already tokenized as `prompt_ids`, `chosen_ids`
and `rejected_ids`. Everything else is TRL's: the reference model (the model the stage starts from; with a LoRA
adapter, TRL's frozen "ref" copy of the adapter, not a second base model), precomputed reference
log-probabilities (`precompute_ref_log_probs=True`), DeepSpeed and DDP preparation, logging and saving. Only
the dataset preparation, the kept columns, the reference log-probabilities and the loss are overridden; TRL's
options of other losses (`LOSS_OPTIONS`) are refused, since the loss never reads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list, is_peft_model
from datasets import Dataset, load_from_disk
from trl import DPOConfig, DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from align3gr.dpo.collator import SoftmaxPreferenceCollator
from align3gr.dpo.config import COLLATION_OPTIONS, LOSS_OPTIONS, SoftmaxDPOOptions
from align3gr.dpo.shared_prompt import FORWARDS
from align3gr.dpo.softmax_dpo_loss import softmax_dpo_loss
from align3gr.errors import ConfigError, DataError
from align3gr.io import atomic_directory
from align3gr.models.loading import pad_token_id
from align3gr.sft.prompting import encode_completion, encode_prompt
from align3gr.training import ResumesWhereItStopped

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


@dataclass
class SoftmaxDPOConfig(SoftmaxDPOOptions, DPOConfig):
    """`DPOConfig` plus the Softmax-DPO options (`SoftmaxDPOOptions`, after DPOConfig's fields). `beta` is the beta of
    Eq. 3; TRL's loss options (`LOSS_OPTIONS`) must keep their defaults (`check_eq3_loss`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        SoftmaxDPOOptions.validate(self)
        check_eq3_loss(self)


class SoftmaxDPOTrainer(ResumesWhereItStopped, DPOTrainer):
    """DPO with one chosen and K rejected completions per prompt (Softmax-DPO)."""

    _tag_names = ["trl", "dpo", "softmax-dpo", "align3gr"]

    def __init__(self, *args, **kwargs) -> None:
        config = kwargs.get("args")
        if config is not None:
            check_eq3_loss(config)
        tokenizer = kwargs.get("processing_class")
        if kwargs.get("data_collator") is None and tokenizer is not None:
            kwargs["data_collator"] = SoftmaxPreferenceCollator(pad_token_id=pad_token_id(tokenizer))
        self._reference_ready = False
        super().__init__(*args, **kwargs)
        self._ready_reference()

    def _ready_reference(self) -> None:
        """Give TRL's frozen "ref" adapter every weight of the adapter the stage starts from (`copy_adapter`), once
        and before the reference scores anything: `precompute_ref_log_probs` scores inside `DPOTrainer.__init__`.
        Once only, since a later precompute pass (`evaluate` on a new dataset) comes after training steps."""
        if self._reference_ready:
            return
        self._reference_ready = True
        if is_peft_model(self.model) and "ref" in self.model.peft_config:
            copy_adapter(self.model, "default", "ref")

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Tokenize `prompt`, `chosen`, `rejected` rows (skipped when the rows already hold token IDs) and refuse
        rows whose rejected list is empty or holds the chosen completion."""
        columns = set(dataset.column_names or [])
        if set(TOKEN_COLUMNS) <= columns:
            return dataset.map(_check_row, with_indices=True, fn_kwargs={"name": dataset_name})
        missing = {"prompt", "chosen", "rejected"} - columns
        if missing:
            raise DataError(
                f"{dataset_name} dataset: missing column(s) {sorted(missing)}; "
                "expected prompt, chosen, rejected (a list of completions)"
            )

        def tokenize(row: dict, index: int) -> dict:
            if isinstance(row["rejected"], str):
                raise DataError(f"{dataset_name} dataset row {index}: 'rejected' must be a list of completions")
            ids = {
                "prompt_ids": encode_prompt(processing_class, row["prompt"]),
                "chosen_ids": encode_completion(processing_class, row["chosen"]),
                "rejected_ids": [encode_completion(processing_class, text) for text in row["rejected"]],
            }
            return _check_row(ids, index, dataset_name)

        return dataset.map(
            tokenize, with_indices=True, remove_columns=sorted(columns & {"prompt", "chosen", "rejected"})
        )

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        """TRL's pass, on the reference the stage starts from (`_ready_reference`), over rows every process reads
        from one folder (`_shared_rows`), with every batch as wide as the dataset's largest rejected count: its
        per-batch results are concatenated, which batches of rows with fewer than K rejected completions would
        otherwise break."""
        if not isinstance(dataset, Dataset):  # TRL refuses an IterableDataset
            return super()._precompute_ref_logps(dataset, name, batch_size)
        self._ready_reference()
        dataset = self._shared_rows(dataset, name)
        collator = self.data_collator
        if not isinstance(collator, SoftmaxPreferenceCollator):
            return super()._precompute_ref_logps(dataset, name, batch_size)
        widest = max((len(rejected) for rejected in dataset["rejected_ids"]), default=0)
        self.data_collator = replace(collator, width=widest)
        try:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        finally:
            self.data_collator = collator

    def _shared_rows(self, dataset: Dataset, name: str) -> Dataset:
        """`dataset` as read from a folder of `output_dir` that the main process writes. TRL caches the reference
        log-probabilities in a file beside the dataset's own; an in-memory dataset (`Dataset.from_list`) has none, so
        each process would pick its own random temporary file and the others would not find the main process's."""
        if dataset.cache_files:
            return dataset
        folder = [str(Path(self.args.output_dir) / "reference_rows" / f"{name}-{dataset._fingerprint}")]
        broadcast_object_list(folder, from_process=0)
        folder = Path(folder[0])
        if self.accelerator.is_main_process and not folder.is_dir():
            with atomic_directory(folder) as work:  # a kill mid-write leaves no folder a resume would read
                dataset.save_to_disk(work)
        self.accelerator.wait_for_everyone()
        return load_from_disk(folder)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = [*TOKEN_COLUMNS, "ref_chosen_logps", "ref_rejected_logps"]

    def completion_logps(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, 1 + K] log-probabilities of the chosen then the rejected completions under `model`."""
        return FORWARDS[self.args.shared_prompt_forward](model, inputs)

    @torch.no_grad()
    def compute_ref_log_probs(self, model, inputs):
        """(chosen [B], rejected [B, K]) under the reference: `model`, or the policy's frozen "ref" adapter (or
        its base with adapters off) when the policy is a PEFT model without a separate reference."""
        adapter = contextlib.nullcontext()
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        with (
            disable_gradient_checkpointing(self.model, self.args.activation_checkpointing_kwargs),
            adapter,
            self.accelerator.autocast(),  # as the policy's forward once `Accelerator.prepare` wraps it
        ):
            logps = self.completion_logps(model, inputs)
        return logps[:, 0], logps[:, 1:]

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        logps = self.completion_logps(model, inputs)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or model, inputs)
        mask = inputs["rejected_mask"]
        out = softmax_dpo_loss(logps[:, 0], logps[:, 1:], ref_chosen, ref_rejected, self.beta, mask)
        loss = out.losses.mean()
        if self.args.sft_weight:
            loss = loss - self.args.sft_weight * logps[:, 0].mean()
        self._log_rewards(mode, out.chosen_rewards.detach(), out.rejected_rewards.detach(), mask, logps.detach())
        return (loss, {"logps": logps}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation computes the loss (and logs the rewards); there are no logits to hand to `compute_metrics`."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _log_rewards(
        self, mode: str, chosen: torch.Tensor, rejected: torch.Tensor, mask: torch.Tensor, logps: torch.Tensor
    ) -> None:
        """Rewards, margin (chosen minus the mean rejected) and accuracy (the chosen beats every rejected)."""
        count = mask.sum(1).clamp_min(1)
        mean_rejected = rejected.masked_fill(~mask, 0).sum(1) / count
        best_rejected = rejected.max(1).values
        rows = {
            "rewards/chosen": chosen,
            "rewards/rejected": mean_rejected,
            "rewards/margins": chosen - mean_rejected,
            "rewards/accuracies": (chosen > best_rejected).float(),
            "logps/chosen": logps[:, 0],
            "logps/rejected": logps[:, 1:].masked_fill(~mask, 0).sum(1) / count,
        }
        for name, values in rows.items():
            self._metrics[mode][name].append(self.accelerator.gather(values).mean().item())


def check_eq3_loss(args: DPOConfig) -> None:
    """A ConfigError when `args` sets a TRL loss or collation option (`LOSS_OPTIONS`, `COLLATION_OPTIONS`) other than
    DPOConfig's default: the trainer computes Eq. 3 on its own batches and never reads them."""
    unread = {**LOSS_OPTIONS, **COLLATION_OPTIONS}
    for field in dataclasses.fields(DPOConfig):
        if field.name in unread:
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default
            if getattr(args, field.name) != default:
                value = getattr(args, field.name)
                raise ConfigError(f"{field.name}={value!r}: {unread[field.name]}; leave it at {default!r}")


def copy_adapter(model, source: str, target: str) -> None:
    """Copy every weight of adapter `source` into adapter `target`. TRL's frozen reference copy matches names with
    `.default.` inside, which misses weights whose name ends with the adapter name, such as the trainable SCID
    rows of `trainable_token_indices` (`...trainable_tokens_delta.default`): the reference would then score the
    new tokens with their rows from before SFT."""
    pattern = re.compile(rf"\.{source}(\.|$)")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if pattern.search(name):
                model.get_parameter(pattern.sub(rf".{target}\1", name)).copy_(param)


def _check_row(row: dict, index: int, name: str) -> dict:
    """A tokenized row, or a DataError when it has no rejected completion or one equal to the chosen."""
    rejected = [list(r) for r in row["rejected_ids"]]
    if not rejected:
        raise DataError(f"{name} dataset row {index}: 'rejected' is empty; Softmax-DPO needs at least one")
    if list(row["chosen_ids"]) in rejected:
        raise DataError(f"{name} dataset row {index}: the chosen completion is among the rejected ones")
    return row
