"""Frozen collaborative encoder (Align3GR "Token-level Alignment"; DAS 2.1): a self-attentive sequential model over
item IDs, trained with sampled softmax on the training split only.

Its item embedding table gives the item CF features; its encoding of a user's training history gives the
user CF feature (the tokenizer's `das_cf` option co-trains an ID-based CF model in their place, DAS 2.2). Valid
targets serve only for early stopping (Recall@10 is reported); test targets are never read. The trained encoder
is saved with the features (`save_encoder`), so it also ranks the whole catalogue as a sequential baseline
(`align3gr.baselines`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from align3gr.data.dataset import Dataset
from align3gr.devices import resolve_device
from align3gr.early_stopping import EarlyStopping
from align3gr.embed.config import EmbedConfig
from align3gr.errors import DataError
from align3gr.io import read_json, write_json
from align3gr.seeding import seeded

log = logging.getLogger(__name__)
ENCODER_WEIGHTS, ENCODER_HYPERPARAMETERS = "collaborative_encoder.safetensors", "collaborative_encoder.json"


class SequenceEncoder(nn.Module):
    """Causal transformer over item embeddings (SASRec-style); index 0 is padding, sequences right-padded."""

    def __init__(self, num_items: int, dim: int, max_len: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.hyperparameters = dict(
            num_items=num_items, dim=dim, max_len=max_len, layers=layers, heads=heads, dropout=dropout
        )
        self.items = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        for table in (self.items, self.positions):
            nn.init.normal_(table.weight, std=dim**-0.5)
        with torch.no_grad():
            self.items.weight[0].zero_()
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), 1), persistent=False)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state after each position, [B, T, dim]."""
        steps = seq.shape[1]
        x = self.items(seq) + self.positions(torch.arange(steps, device=seq.device))
        x = self.encoder(self.dropout(x), mask=self.causal[:steps, :steps], src_key_padding_mask=seq == 0)
        return self.norm(x)

    def encode_last(self, seq: torch.Tensor) -> torch.Tensor:
        """The hidden state at each row's last real item, [B, dim]."""
        last = (seq != 0).sum(1).clamp(min=1) - 1
        return self.forward(seq)[torch.arange(len(seq), device=seq.device), last]

    @torch.no_grad()
    def score_items(self, seq: torch.Tensor) -> torch.Tensor:
        """`[B, num_items]` score of every item (catalogue order, padding left out) after each row's history."""
        return self.encode_last(seq) @ self.items.weight[1:].T


def save_encoder(model: SequenceEncoder, folder: Path) -> None:
    """The encoder's weights and the hyperparameters that rebuild it, into `folder` (items in `ids.json` order)."""
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / ENCODER_WEIGHTS))
    write_json(folder / ENCODER_HYPERPARAMETERS, model.hyperparameters)


def require_encoder(folder: Path) -> None:
    """A DataError unless `folder` holds the encoder `save_encoder` writes (checked before work that needs it)."""
    if not folder.is_dir():
        raise DataError("folder not found: expected the embed stage's output (embeddings/)", folder)
    if not (folder / ENCODER_WEIGHTS).is_file() or not (folder / ENCODER_HYPERPARAMETERS).is_file():
        raise DataError(f"no {ENCODER_WEIGHTS} (embedded before the encoder was saved): run `align3gr embed` again",
                        folder)  # fmt: skip


def load_encoder(folder: str | Path) -> SequenceEncoder:
    """The encoder `save_encoder` wrote into an `embeddings/` folder, in eval mode."""
    folder = Path(folder)
    require_encoder(folder)
    model = SequenceEncoder(**read_json(folder / ENCODER_HYPERPARAMETERS))
    model.load_state_dict(load_file(folder / ENCODER_WEIGHTS))
    return model.eval()


@dataclass
class CFResult:
    """Item and user CF features (rows in the dataset's item and user order), training statistics, and the encoder
    (the best epoch's)."""

    items: np.ndarray
    users: np.ndarray
    valid_recall_at_10: float
    epochs: int
    model: SequenceEncoder


def pack(histories: list[list[int]], max_len: int) -> torch.Tensor:
    """Right-padded [N, max_len] tensor of the last `max_len` items of each history."""
    out = torch.zeros(len(histories), max_len, dtype=torch.long)
    for row, history in enumerate(histories):
        tail = history[-max_len:]
        out[row, : len(tail)] = torch.tensor(tail)
    return out


def training_windows(train: list[list[int]], max_len: int) -> torch.Tensor:
    """Each training sequence cut from its end into windows of max_len + 1 items (input + shifted target)."""
    windows = []
    for seq in train:
        for end in range(len(seq), 1, -max_len):
            windows.append(seq[max(0, end - max_len - 1) : end])
    return pack(windows, max_len + 1)


def sampled_softmax_loss(hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, negatives: torch.Tensor):
    """Cross-entropy of each target against shared uniform negatives (accidental hits masked out)."""
    positive = (hidden * table[targets]).sum(-1, keepdim=True)
    negative = hidden @ table[negatives].T
    negative = negative.masked_fill(targets.unsqueeze(-1) == negatives, float("-inf"))
    logits = torch.cat([positive, negative], -1)
    return nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


@torch.no_grad()
def recall_at_k(
    model: SequenceEncoder, histories: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor, k: int = 10
) -> float:
    """Recall@k of `targets` after `histories`, as `align3gr evaluate` and the baselines measure it: the items of each
    user's whole training part (`seen`: [2, N] user rows and item indices) are left out of the ranking before the cut,
    since a repeated item is never a target (the 20-item histories alone would leave older ones in)."""
    model.eval()
    scores = model.score_items(histories)
    scores[seen[0], seen[1] - 1] = float("-inf")
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices + 1  # a catalogue of fewer than k items: all of it
    return (top == targets.unsqueeze(1)).any(1).float().mean().item()


def train_collaborative(dataset: Dataset, config: EmbedConfig, device: torch.device | None = None) -> CFResult:
    """Train on `items[:-2]` of every user on `device` (default: `config.device` resolved), with random draws from a
    CPU generator; keep the epoch with the best validation Recall@10. The results are on the CPU."""
    max_len = dataset.max_history
    device = device or resolve_device(config.device)
    with seeded(config.seed, device) as generator:
        index = {item_id: k + 1 for k, item_id in enumerate(dataset.items)}
        users = list(dataset.sequences)
        train = [[index[i] for i in dataset.train_items(u)] for u in users]
        valid_targets = torch.tensor([index[dataset.sequences[u].items[-2]] for u in users], device=device)
        histories = pack(train, max_len).to(device)
        seen = torch.stack([
            torch.arange(len(train)).repeat_interleave(torch.tensor([len(items) for items in train])),
            torch.tensor([i for items in train for i in items], dtype=torch.long),
        ]).to(device)  # fmt: skip
        windows = training_windows(train, max_len).to(device)
        if not len(windows):
            raise DataError(
                "no user has a training pair (every training part holds one item): the collaborative encoder needs "
                "a user with at least 4 interactions (2 training items, then valid and test)",
                (dataset.path or Path()) / "sequences.jsonl",
            )
        model = SequenceEncoder(
            len(index), config.cf_dim, max_len, config.cf_layers, config.cf_heads, config.cf_dropout
        ).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.cf_lr)
        num_negatives = min(config.cf_negatives, len(index) - 1)
        stopping, epochs_run = EarlyStopping(model, config.cf_patience), 0
        for epoch in (bar := tqdm(range(1, config.cf_epochs + 1), desc="collaborative encoder", unit="epoch")):
            model.train()
            epochs_run = epoch
            order = torch.randperm(len(windows), generator=generator).to(device)
            for batch in windows[order].split(config.cf_batch_size):
                inputs, targets = batch[:, :-1], batch[:, 1:]
                hidden = model(inputs)[targets != 0]
                sampled = torch.randint(1, len(index) + 1, (num_negatives,), generator=generator).to(device)
                loss = sampled_softmax_loss(hidden, targets[targets != 0], model.items.weight, sampled)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            recall = recall_at_k(model, histories, valid_targets, seen)
            bar.set_postfix(loss=f"{loss.item():.3f}", valid_recall10=f"{recall:.4f}")
            if stopping.update(recall):
                break
        best = stopping.restore()
        model.eval()
        with torch.no_grad():
            user_features = torch.cat([model.encode_last(chunk) for chunk in histories.split(1024)])
    log.info("collaborative encoder: best valid Recall@10 %.4f after %d epochs", best, epochs_run)
    model.cpu()
    return CFResult(
        items=model.items.weight[1:].detach().numpy().copy(),
        users=user_features.cpu().numpy(),
        valid_recall_at_10=best,
        epochs=epochs_run,
        model=model,
    )
