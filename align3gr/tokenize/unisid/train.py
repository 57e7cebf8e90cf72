"""Training of UniSID (its section 3.5): Eq. 11 end to end over the catalogue, alone or under `accelerate launch`
(DDP), then every item's SID from its whole input (Eq. 4).

A step takes `batch_size` items and both views of each. Under several processes each takes its share of the step's
items and contrasts them among themselves while DDP averages the gradients (a final step with fewer items than
processes is skipped). Epochs visit the items in a seeded order; the second views are drawn from the seed, the
epoch and the item, so the same seed and config give the same codes. The trained model is saved in `work/unisid`.
The loop applies the `training_args` of its options: AdamW's betas and epsilon, gradient clipping (`max_grad_norm`,
only when given) and `report_to`, Accelerate's trackers logging each step's losses from the main process (TensorBoard
into `work/runs`, published with the stage's output).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from align3gr.data.dataset import Dataset
from align3gr.data.texts import informative_categories
from align3gr.errors import ConfigError
from align3gr.scid.vocabulary import extend_vocabulary
from align3gr.seeding import seeded
from align3gr.stage_output import LOGS, fresh_work
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.unisid.backbone import (
    build_tiny_models,
    load_backbone,
    load_reconstructor,
    make_trainable,
    model_paths,
    tiny_texts,
)
from align3gr.tokenize.unisid.config import UniSIDConfig
from align3gr.tokenize.unisid.losses import total_loss, unisid_losses
from align3gr.tokenize.unisid.model import UniSID, encode_views
from align3gr.tokenize.unisid.schema import ItemInput, ItemSchema, first_view, item_inputs, second_view, sid_tokens
from align3gr.tokenize.unisid.summaries import load_unisid_prompts, write_summaries

log = logging.getLogger(__name__)
SAVED = "unisid"


@dataclass
class UniSIDResult:
    """The raw SIDs [N, L] of the catalogue (dataset order), the deepest level's costs [N, K] (-log softmax of its
    logits, for collision resolution), and the training report."""

    codes: np.ndarray
    last_level_costs: np.ndarray
    report: dict


def granularity_labels(dataset: Dataset, levels: int, by_category: bool = True) -> np.ndarray:
    """[N, L] labels of the positive sets of UniSID Eq. 5: at level l the item's category path cut to depth l, the
    path without near-universal categories (`informative_categories`: Amazon's root is on every item and would make
    every row a positive at level 1, leaving no negatives); the item itself where its path is shorter than l, and
    at every level without `by_category` (UniSID Table 5's InfoNCE baseline)."""
    informative = informative_categories(dataset)
    ids: dict[tuple, int] = {}
    rows = []
    for index, item in enumerate(dataset.items.values()):
        path = [c for c in item.categories if c in informative] if by_category else []
        keys = [(depth, *path[:depth]) if depth <= len(path) else (depth, index) for depth in range(1, levels + 1)]
        rows.append([ids.setdefault(key, len(ids)) for key in keys])
    return np.array(rows, dtype=np.int64)


def tokenized_summaries(summaries: list[str], tokenizer) -> list[list[int]]:
    """Each summary's token IDs, ending with the end-of-sequence token."""
    ids = tokenizer(summaries, add_special_tokens=False)["input_ids"]
    return [row + [tokenizer.eos_token_id] for row in ids]


def summary_batch(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded `summary_ids` and `summary_mask`."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"summary_ids": ids, "summary_mask": mask}


@dataclass
class Batch:
    """A process's share of one step: the backbone inputs of the first views of its items then of their second
    views, each row's labels of Eq. 5 [2n, L] and item index [2n], and the summaries to reconstruct (or none)."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    items: torch.Tensor
    summary: dict[str, torch.Tensor]


@dataclass
class Batches:
    """Makes the `Batch` of item indices at an epoch; the second views are drawn from the seed, epoch and item."""

    schema: ItemSchema
    items: list[ItemInput]
    labels: torch.Tensor
    summaries: list[list[int]]
    pad_id: int | None
    dropout: float
    seed: int
    device: torch.device

    def __call__(self, indices: list[int], epoch: int) -> Batch:
        views = [first_view(self.items[i]) for i in indices]
        rngs = [np.random.default_rng([self.seed, epoch, i]) for i in indices]
        views += [second_view(self.items[i], rng, self.dropout) for i, rng in zip(indices, rngs, strict=True)]
        rows = indices + indices
        summary = summary_batch([self.summaries[i] for i in rows], self.pad_id) if self.summaries else {}
        return Batch(
            {k: v.to(self.device) for k, v in self.schema(views).items()},
            self.labels[rows].to(self.device),
            torch.tensor(rows, device=self.device),
            {k: v.to(self.device) for k, v in summary.items()},
        )


def run_epochs(model, optimizer, scheduler, batches: Batches, options: UniSIDConfig, generator, accelerator) -> list:
    """The training epochs (Eq. 11 per step); returns each epoch's mean losses."""
    rank, world = accelerator.process_index, accelerator.num_processes
    count = len(batches.items)
    history: list[dict] = []
    bar = tqdm(total=options.epochs * math.ceil(count / options.batch_size), desc="UniSID training", unit="step",
               disable=not accelerator.is_main_process)  # fmt: skip
    clip = options.training_args.get("max_grad_norm")
    updates = 0
    model.train()
    for epoch in range(1, options.epochs + 1):
        sums: dict[str, float] = {}
        done = 0
        for step in torch.randperm(count, generator=generator).split(options.batch_size):
            bar.update()
            if len(step) < world:
                continue
            batch = batches(step[rank::world].tolist(), epoch)
            output = model(batch.inputs, **batch.summary)
            losses = unisid_losses(output, batch.labels, batch.items, options.temperature)
            loss = total_loss(losses, options.reconstruction_weight)
            accelerator.backward(loss)
            if clip is not None:
                accelerator.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            done += 1
            updates += 1
            values = {name: value.item() for name, value in {"loss": loss, **losses}.items()}
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            logged = {f"train/{name}": value for name, value in values.items()}
            accelerator.log(logged | {"train/learning_rate": scheduler.get_last_lr()[0]}, step=updates)
            bar.set_postfix(loss=f"{values['loss']:.3f}")
        history.append({"epoch": epoch, **{k: v / done for k, v in sums.items()}})
    bar.close()
    return history


def adamw_arguments(options: UniSIDConfig) -> dict:
    """AdamW's betas and epsilon from `training_args` (torch's defaults, which are Transformers', where not given)."""
    given = options.training_args
    betas = (given.get("adam_beta1", 0.9), given.get("adam_beta2", 0.999))
    return {"betas": betas, "eps": given.get("adam_epsilon", 1e-8)}


def encode_catalogue(model: UniSID, schema: ItemSchema, items: list[ItemInput], batch_size: int, accelerator):
    """(SIDs [N, L], the deepest level's -log softmax [N, K]) of every item's first view; each process encodes
    its share and all get every row."""
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(len(items)))[rank::world]
    views = [first_view(items[i]) for i in mine]
    logits, _ = encode_views(model, schema, views, batch_size, accelerator.is_main_process)
    codes = logits.argmax(-1)
    costs = -torch.log_softmax(torch.from_numpy(logits[:, -1]), dim=-1).numpy()
    if world == 1:
        return codes, costs
    from accelerate.utils import gather_object

    gathered = dict(gather_object(list(zip(mine, zip(codes, costs, strict=True), strict=True))))
    return np.stack([gathered[i][0] for i in range(len(items))]), np.stack([gathered[i][1] for i in range(len(items))])


def train_unisid(dataset: Dataset, config: TokenizeConfig, work: Path, device: torch.device) -> UniSIDResult:
    """Train UniSID on `dataset` with `config.unisid_options` (L = `config.levels`, K = `config.codebook_size`) in
    every process, on the CPU if `device` is the CPU, else on Accelerate's device of the process; the main one
    prepares `work` and saves the model in `work/unisid`."""
    from accelerate import Accelerator, DistributedType
    from transformers import get_cosine_schedule_with_warmup

    start = time.perf_counter()
    options = UniSIDConfig(**config.unisid_options)
    trackers = [name for name in options.training_args.get("report_to") or [] if name != "none"]
    accelerator = Accelerator(cpu=device.type == "cpu", log_with=trackers or None, project_dir=str(work))
    if options.batch_size < accelerator.num_processes:
        raise ConfigError(
            f"unisid_options.batch_size={options.batch_size}: at least the number of processes "
            f"({accelerator.num_processes}), each of which takes its share of every batch"
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ConfigError("UniSID trains with DDP: launch with --multi_gpu (gloo on CPU), not a DeepSpeed config")
    instruction = load_unisid_prompts()["instruction"][0]
    items = item_inputs(dataset, options.image_attribute, options.max_description_words)
    backbone_path, reconstructor_path = model_paths(options, work)
    with accelerator.main_process_first():
        summaries = write_summaries(dataset, options, config.seed)
        if accelerator.is_main_process:
            fresh_work(work, "unisid")  # a fresh start: no checkpoint to resume from
            texts = list(tiny_texts(items, summaries, instruction))
            build_tiny_models(options, texts, backbone_path, reconstructor_path, config.seed)
    accelerator.init_trackers(LOGS)  # on the main process, into the fresh work folder

    with seeded(config.seed, accelerator.device) as generator:
        backbone, tokenizer, image_processor = load_backbone(backbone_path, options.dtype)
        token_ids = extend_vocabulary(backbone, tokenizer, sid_tokens(config.levels))
        reconstructor, summary_tokenizer = (
            load_reconstructor(reconstructor_path, options.dtype) if reconstructor_path else (None, None)
        )
        backbone = make_trainable(backbone, token_ids, options)
        model = UniSID(backbone, token_ids, config.codebook_size, options.embedding_dim, reconstructor)
        schema = ItemSchema(tokenizer, image_processor, backbone.config, instruction, config.levels)
        batches = Batches(
            schema, items, torch.from_numpy(granularity_labels(dataset, config.levels, options.multi_granularity)),
            tokenized_summaries(summaries, summary_tokenizer) if reconstructor else [],
            summary_tokenizer.pad_token_id if reconstructor else None,
            options.view_dropout, config.seed, accelerator.device,
        )  # fmt: skip
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=options.learning_rate, weight_decay=options.weight_decay, **adamw_arguments(options)
        )
        steps = options.epochs * math.ceil(len(items) / options.batch_size)
        scheduler = get_cosine_schedule_with_warmup(optimizer, int(options.warmup_ratio * steps), steps)
        prepared, optimizer = accelerator.prepare(model, optimizer)
        history = run_epochs(prepared, optimizer, scheduler, batches, options, generator, accelerator)
        for tracker in accelerator.trackers:  # not `end_training`, which would end the process group
            tracker.finish()
        model.eval()
        codes, costs = encode_catalogue(model, schema, items, options.encode_batch_size, accelerator)
    if accelerator.is_main_process:
        document = {
            "tokens": sid_tokens(config.levels),
            "codebook_size": config.codebook_size,
            "embedding_dim": options.embedding_dim,
            "instruction": instruction,
            "options": asdict(options),
            "seed": config.seed,
        }
        (work / SAVED).mkdir()
        model.save(work / SAVED, tokenizer, image_processor, document)
    accelerator.wait_for_everyone()
    report = {
        "history": history,
        "steps": steps,
        "processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "trainable_parameters": sum(p.numel() for p in trainable),
        "backbone": options.model,
        "summaries": "llm" if options.summary_model else "template",
        "summary_example": summaries[0],
        "seconds": round(time.perf_counter() - start, 2),
    }
    log.info("UniSID on %s: %d steps, loss %.3f -> %.3f", accelerator.device, steps, history[0]["loss"],
             history[-1]["loss"])  # fmt: skip
    return UniSIDResult(codes, costs, report)
