"""The dual SCID tokenizer of Align3GR ("Token-level Alignment", Eq. 1-2): a user and an item RQ-VAE over
[semantic; collaborative] features whose Semantic-Collaborative encoders (by default the RQ-VAEs' own encoders,
see `rqvae`) are trained with

    L = alpha * L_U2I + gamma * (L_RQ^user + L_RQ^item)

in two phases: alpha = 1, gamma = 0 until the validation U2I AUC stops improving (the SC encoders learn the
behaviour alignment), then the codebooks are initialised by k-means (as in DAS 2.1.2) and training goes on with
alpha = 0.1, gamma = 1 (quantisation). Phase 2 may add DAS, QuaSID's HaMR and AdaSID (`batch_loss`); after each
phase-2 epoch unused codes are revived (`revive_dead_codes`, not in Align3GR). Two options act in both phases:
QuaSID's contrastive loss on item co-engagement pairs (`quasid_cl`), whose pair batch is then the item batch of
every item-side loss, as in QuaSID Eq. 14, and DAS's ID-based CF model (`das_cf`), trained from the first step by
its own loss and read in place of the frozen collaborative features.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from align3gr.config import fingerprint_options
from align3gr.data.dataset import Dataset
from align3gr.devices import resolve_device
from align3gr.early_stopping import EarlyStopping
from align3gr.embed.stage import Embeddings
from align3gr.errors import ConfigError, DataError
from align3gr.seeding import seeded
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.losses.adasid import AdaSIDConfig, adasid_collision_loss, progress_weights
from align3gr.tokenize.losses.das import DASAlignment, DASConfig
from align3gr.tokenize.losses.das_cf import DASCFConfig, DebiasedCF, bias_features
from align3gr.tokenize.losses.hamr import HaMRConfig, cvpm_mask, hamr_loss, paired_positives
from align3gr.tokenize.losses.quasid_cl import QuaSIDCLConfig, co_engagement_pairs, excluded_negatives, quasid_cl_loss
from align3gr.tokenize.losses.u2i import InteractionSet, false_negative_mask, u2i_auc, u2i_loss
from align3gr.tokenize.rqvae import RQVAE

log = logging.getLogger(__name__)


def block_scales(semantic: np.ndarray, collaborative: np.ndarray | None) -> list[float]:
    """Mean row norm of each feature block, measured on the training catalogue and saved with the tokenizer."""
    blocks = [semantic] if collaborative is None else [semantic, collaborative]
    return [max(float(np.linalg.norm(b, axis=1).mean()), 1e-12) for b in blocks]


def side_features(semantic: np.ndarray, collaborative: np.ndarray | None, scales: list[float]) -> torch.Tensor:
    """[semantic; collaborative], each block divided by its scale so that neither dominates."""
    blocks = [semantic] if collaborative is None else [semantic, collaborative]
    if len(blocks) != len(scales):
        raise DataError(f"expected {len(scales)} feature blocks (semantic{'; collaborative' * (len(scales) - 1)})")
    return torch.from_numpy(
        np.concatenate([b / s for b, s in zip(blocks, scales, strict=True)], axis=1).astype(np.float32)
    )


def side_rqvae(config: TokenizeConfig, input_dim: int, codebook_size: int) -> RQVAE:
    """One side's RQ-VAE with the config's sizes."""
    shape = (config.hidden_dims, config.levels, codebook_size, config.code_dim, config.beta)
    return RQVAE(input_dim, *shape, sc_dim=config.sc_dim)


class DualTokenizer(torch.nn.Module):
    """The item RQ-VAE, (when dual) the user RQ-VAE and (with `das_cf`) DAS's co-trained CF model, built on
    `cf_features` ("user", "item": each side's bias features [rows, F]; zeros of the saved shapes when loading);
    saved as safetensors + JSON and reloadable."""

    def __init__(
        self,
        config: TokenizeConfig,
        item_dim: int,
        user_dim: int | None,
        scales: dict[str, list[float]] | None = None,
        cf_features: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.item_dim, self.user_dim = item_dim, user_dim
        self.scales = scales or {}
        self.items = side_rqvae(config, item_dim, config.codebook_size)
        self.users = side_rqvae(config, user_dim, config.user_codebook_size) if user_dim is not None else None
        self.cf = (
            DebiasedCF(cf_features["user"], cf_features["item"], DASCFConfig(**config.das_cf_options))
            if cf_features is not None
            else None
        )

    def save(self, folder: Path) -> None:
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / "tokenizer.safetensors"))
        config = fingerprint_options(self.config)  # without the device, which the tokenizer does not depend on
        document = {"config": config, "item_dim": self.item_dim, "user_dim": self.user_dim}
        document["feature_scales"] = self.scales
        if self.cf is not None:
            document["cf_features"] = {side: list(self.cf.side(side).features.shape) for side in ("user", "item")}
        (folder / "tokenizer_config.json").write_text(json.dumps(document, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> DualTokenizer:
        folder = Path(folder)
        document = json.loads((folder / "tokenizer_config.json").read_text())
        config = TokenizeConfig(**document["config"])
        cf_shapes = document.get("cf_features")
        cf_features = {side: torch.zeros(shape) for side, shape in cf_shapes.items()} if cf_shapes else None
        model = cls(config, document["item_dim"], document["user_dim"], document["feature_scales"], cf_features)
        model.load_state_dict(load_file(str(folder / "tokenizer.safetensors")))
        return model.eval()

    @torch.no_grad()
    def collaborative(self, side: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """With `das_cf`, the co-trained CF block of the tokenizer input for catalogue `rows` (all when None): the
        CF model's representations, one unit row each."""
        module = self.cf.side(side)
        rows = torch.arange(len(module.features), device=module.features.device) if rows is None else rows
        return torch.nn.functional.normalize(module.representation(rows), dim=-1)

    @torch.no_grad()
    def encode(self, side: str, semantic: np.ndarray, collaborative: np.ndarray | None = None) -> np.ndarray:
        """Codes [N, L] of new items or users (`side` "item" or "user") from their embed-stage features (with
        `das_cf` and `use_cf`, the collaborative block of catalogue rows is `collaborative(side)`: new IDs have
        none). New rows are not de-duplicated against the catalogue: run `tokenize` again to re-resolve
        collisions."""
        rqvae, expected = (self.items, self.item_dim) if side == "item" else (self.users, self.user_dim)
        if rqvae is None:
            raise DataError("this tokenizer is item-only: it has no user side")
        features = side_features(semantic, collaborative if self.config.use_cf else None, self.scales[side])
        if features.shape[1] != expected:
            raise DataError(f"{side} features have {features.shape[1]} dimensions; this tokenizer expects {expected}")
        if not torch.isfinite(features).all():
            raise DataError(f"{side} features hold NaN or infinite values")
        return rqvae.encode(features.to(rqvae.quantizer.codebooks.device)).cpu().numpy()


@dataclass
class TrainHistory:
    """Per-epoch validation U2I AUC and losses, by phase, and the epoch of the switch."""

    phase1: list[dict] = field(default_factory=list)
    phase2: list[dict] = field(default_factory=list)


def training_pairs(dataset: Dataset, item_index: dict[str, int], user_index: dict[str, int]) -> torch.Tensor:
    """[P, 2] (user, item) rows for every training interaction (items[:-2])."""
    rows = [(user_index[u], item_index[i]) for u in dataset.sequences for i in dataset.train_items(u)]
    return torch.tensor(rows, dtype=torch.long)


class Neighbours:
    """For each key (an item, or a user), the values it co-occurs with in training; sampled one per row."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, num_keys: int) -> None:
        self.span = int(values.max()) + 1 if len(values) else 1
        self.composite, order = torch.sort(keys * self.span + values)  # by key, then value
        self.values = values[order]
        self.counts = torch.bincount(keys, minlength=num_keys)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts

    def sample(self, keys: torch.Tensor, exclude: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Per row, one value drawn uniformly among those of `keys[b]` other than `exclude[b]` (the anchor itself),
        or -1 when the key has no other value."""
        query = keys * self.span + exclude
        first = torch.searchsorted(self.composite, query)
        skipped = torch.searchsorted(self.composite, query, right=True) - first
        available = self.counts[keys] - skipped
        draw = torch.randint(1 << 30, (len(keys),), generator=generator).to(keys.device) % available.clamp_min(1)
        index = self.offsets[keys] + draw
        index = index + skipped * (index >= first)
        return torch.where(available > 0, self.values[index.clamp(max=len(self.values) - 1)], -1)


def pooled_codes(rqvae: RQVAE, features: torch.Tensor) -> torch.Tensor:
    """The sum of the codebook vectors of the rows' codes [N, code_dim], differentiable in the codebooks only: the
    SID representation z of DAS 2.3 ("sum-pooling the codebook embeddings")."""
    return rqvae.quantizer.lookup(rqvae.encode(features))


def cycle_chunks(count: int, size: int, generator: torch.Generator, device: torch.device | str = "cpu"):
    """Endless uniform mini-batches of row indices on `device`, a fresh permutation per pass (drawn on the CPU)."""
    while True:
        yield from torch.randperm(count, generator=generator).to(device).split(size)


class DualTrainer:
    """Runs the two-phase schedule of Eq. 2 on one dataset, on `device` (default: `config.device` resolved); its
    random draws come from a CPU generator whatever the device."""

    def __init__(
        self, dataset: Dataset, embeddings: Embeddings, config: TokenizeConfig, device: torch.device | None = None
    ) -> None:
        embeddings.check_made_for(dataset)
        self.config = config
        self.device = device = device or resolve_device(config.device)
        self.cf_input = config.das_cf and config.use_cf  # the co-trained CF block replaces the frozen one
        frozen_cf = config.use_cf and not config.das_cf
        item_cf = embeddings.item_cf if frozen_cf else None
        user_cf = embeddings.user_cf if frozen_cf else None
        self.scales = {
            "item": block_scales(embeddings.item_semantic, item_cf),
            "user": block_scales(embeddings.user_semantic, user_cf),
        }
        self.x_items = side_features(embeddings.item_semantic, item_cf, self.scales["item"]).to(device)
        self.x_users = side_features(embeddings.user_semantic, user_cf, self.scales["user"]).to(device)
        if self.cf_input:  # unit rows: the block's mean row norm is 1, its scale
            self.scales = {side: scales + [1.0] for side, scales in self.scales.items()}
        item_index = {i: k for k, i in enumerate(embeddings.item_ids)}
        user_index = {u: k for k, u in enumerate(embeddings.user_ids)}
        self.pairs = training_pairs(dataset, item_index, user_index).to(device)
        self.known = InteractionSet(self.pairs[:, 0], self.pairs[:, 1], len(item_index))
        self.valid = torch.tensor(
            [(user_index[u], item_index[s.items[-2]]) for u, s in dataset.sequences.items()], device=device
        )
        self.history = TrainHistory()
        self.cf_users = torch.from_numpy(embeddings.user_cf).to(device)
        self.cf_items = torch.from_numpy(embeddings.item_cf).to(device)
        self.co_users = Neighbours(self.pairs[:, 1], self.pairs[:, 0], len(item_index))
        self.co_items = Neighbours(self.pairs[:, 0], self.pairs[:, 1], len(user_index))
        self.hamr = HaMRConfig(**config.hamr_options)
        self.adasid = AdaSIDConfig(**config.adasid_options)
        self.das_cf = DASCFConfig(**config.das_cf_options)
        self.cf_features = (
            dict(zip(("user", "item"), bias_features(self.pairs, len(user_index), len(item_index)), strict=True))
            if config.das_cf
            else None
        )
        self.quasid = QuaSIDCLConfig(**config.quasid_cl_options)
        self.item_pairs = torch.zeros(0, 2, dtype=torch.long, device=device)
        if config.quasid_cl:
            histories = [[item_index[i] for i in dataset.train_items(u)] for u in dataset.sequences]
            self.item_pairs = co_engagement_pairs(histories, self.quasid.window).to(device)
            if not len(self.item_pairs):
                raise DataError("quasid_cl: no two different items co-occur in a training sequence")
        self.co_engaged = None
        if config.quasid_cl and self.quasid.mask == "related":  # an items x items table, read by that mask only
            self.co_engaged = InteractionSet(self.item_pairs[:, 0], self.item_pairs[:, 1], len(item_index))
        cf_dims = (self.das_cf.dim,) * 2 if config.das_cf else (self.cf_users.shape[1], self.cf_items.shape[1])
        self.das = None
        if config.das:
            with seeded(config.seed):  # reproducible initialisation of the linear maps
                self.das = DASAlignment(*cf_dims, config.code_dim, DASConfig(**config.das_options)).to(device)
        self.step = 0
        self.generator = torch.Generator()

    def new_model(self) -> DualTokenizer:
        """A fresh tokenizer for this trainer's inputs (and its CF model, with `das_cf`)."""
        extra = self.das_cf.dim if self.cf_input else 0
        user_dim = self.x_users.shape[1] + extra if self.config.dual else None
        model = DualTokenizer(self.config, self.x_items.shape[1] + extra, user_dim, self.scales, self.cf_features)
        return model.to(self.device)

    def features(self, model: DualTokenizer, side: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The tokenizer input of a side's `rows` (all when None): the frozen [semantic; collaborative] rows, or with
        `das_cf` and `use_cf` the semantic rows and the model's co-trained CF block (`DualTokenizer.collaborative`,
        no gradient)."""
        fixed = self.x_items if side == "item" else self.x_users
        fixed = fixed if rows is None else fixed[rows]
        if not self.cf_input:
            return fixed
        return torch.cat([fixed, model.collaborative(side, rows)], 1)

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps of one `run_epoch`, one per batch of training pairs whichever losses are on: the clock of
        AdaSID's progress (Eq. 11)."""
        return math.ceil(len(self.pairs) / self.config.batch_size)

    def batch_loss(
        self, model: DualTokenizer, pairs: torch.Tensor, alpha: float, gamma: float, streams, quantising: bool
    ) -> dict:
        """Eq. 2 on one step (U2I on the pair batch, RQ on uniform item and user batches when gamma > 0), plus the
        enabled regularisers in phase 2 (`quantising`) only: HaMR, AdaSID and DAS act on the codes of the codebooks
        k-means initialised at the switch, never on phase 1's (discarded) ones, whatever `phase1_gamma`. AdaSID's
        Eq. 14 weights its collision loss by lambda_col(tau) and its collaborative term, here the U2I loss (when
        `u2i` is on), by lambda_cf(tau), on top of Eq. 2's alpha. In both phases, `das_cf` adds alpha_CF *
        L_CF_all (DAS) on the pair batch, and `quasid_cl` adds L_cl (QuaSID Eq. 7) on a batch of B co-engagement
        pairs whose 2B items, triggers then targets, are also the item batch of the RQ loss, HaMR (whose CVPM then
        masks each constructed pair, QuaSID Eq. 8) and AdaSID."""
        config = self.config
        losses: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {"u2i": alpha, "rq_item": gamma, "rq_user": gamma}
        if config.adasid and quantising:
            collision, collaborative = progress_weights(self.step, self.adasid)
            weights |= {"adasid_item": collision, "adasid_user": collision}
            weights["u2i"] += collaborative if config.u2i else 0.0
        users, items = pairs[:, 0], pairs[:, 1]
        if weights["u2i"] > 0 and model.users is not None:
            u = model.users.sc_embedding(self.features(model, "user", users))
            v = model.items.sc_embedding(self.features(model, "item", items))
            losses["u2i"] = u2i_loss(u, v, false_negative_mask(users, items, self.known))
        if model.cf is not None and len(pairs):
            cf = model.cf.loss(users, items, false_negative_mask(users, items, self.known))
            losses["das_cf"] = cf.pop("total")
            losses |= {f"das_cf_{part}": value for part, value in cf.items()}
            weights["das_cf"] = self.das_cf.alpha
        item_rows, positives = None, None
        if config.quasid_cl:
            chosen = self.item_pairs[next(streams["item_pairs"])]
            item_rows, positives = chosen.T.flatten(), paired_positives(len(chosen), chosen.device)
            if gamma == 0:  # no RQ forward pass to share in phase 1
                latent = model.items.latent(self.features(model, "item", item_rows))
                losses["quasid_cl"] = self.quasid_cl(latent, chosen)
        if gamma > 0:
            sides = [("item", model.items, item_rows if item_rows is not None else next(streams["items"]))]
            if model.users is not None:
                sides.append(("user", model.users, next(streams["users"])))
            for side, rqvae, rows in sides:
                out = rqvae(self.features(model, side, rows))
                losses[f"rq_{side}"] = out.loss
                if side == "item" and config.quasid_cl:
                    losses["quasid_cl"] = self.quasid_cl(out.embedding, chosen)
                if not quantising or (side == "user" and not config.regularize_users):
                    continue
                if config.hamr:
                    mask = cvpm_mask(rows, positives if side == "item" else None)
                    losses[f"hamr_{side}"] = hamr_loss(out.embedding, out.quantized.codes, mask, self.hamr)
                    weights[f"hamr_{side}"] = 1.0
                if config.adasid:
                    collision = adasid_collision_loss(out.embedding, out.quantized.codes, rows, self.adasid)
                    losses[f"adasid_{side}"] = collision
            if self.das is not None and quantising and len(pairs):
                losses["das"] = self.das_loss(model, pairs)["total"]
                weights["das"] = 1.0
        if config.quasid_cl:
            weights["quasid_cl"] = 1.0
        total = sum(weights.get(name, 0.0) * value for name, value in losses.items())
        return {"total": total, **losses}

    def quasid_cl(self, latent: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """L_cl (QuaSID Eq. 7) of B (trigger, target) rows `chosen` [B, 2] from the encoder outputs [2B, d] of their
        items, triggers then targets."""
        triggers, targets = chosen[:, 0], chosen[:, 1]
        exclude = excluded_negatives(triggers, targets, self.quasid.mask, self.co_engaged)
        return quasid_cl_loss(latent[: len(chosen)], latent[len(chosen) :], exclude, self.quasid)

    def das_loss(self, model: DualTokenizer, pairs: torch.Tensor) -> dict[str, torch.Tensor]:
        """DAS's six views and their total on the pair batch. z_u, z_i are the sums of the chosen codes (DAS 2.3),
        so the alignment trains the codebooks; co-occurrence partners are drawn from the training interactions,
        never the anchor itself."""
        users, items = pairs[:, 0], pairs[:, 1]
        co_users = self.co_users.sample(items, users, self.generator)
        co_items = self.co_items.sample(users, items, self.generator)
        cotrained = model.cf is not None
        return self.das(
            pooled_codes(model.users, self.features(model, "user", users)),
            pooled_codes(model.items, self.features(model, "item", items)),
            model.cf.users.representation(users) if cotrained else self.cf_users[users],
            model.cf.items.representation(items) if cotrained else self.cf_items[items],
            pooled_codes(model.users, self.features(model, "user", co_users.clamp_min(0))),
            pooled_codes(model.items, self.features(model, "item", co_items.clamp_min(0))),
            same_item=items.unsqueeze(0) == items.unsqueeze(1),
            same_user=users.unsqueeze(0) == users.unsqueeze(1),
            interacted=self.known.contains(users.unsqueeze(1), items.unsqueeze(0)),
            co_user_rows=co_users >= 0,
            co_item_rows=co_items >= 0,
        )

    @torch.no_grad()
    def validation_auc(self, model: DualTokenizer, generator: torch.Generator) -> float:
        """U2I AUC of each user's validation target against sampled items the user never interacted with."""
        if model.users is None:
            return float("nan")
        model.eval()
        users, positives = self.valid[:, 0], self.valid[:, 1]
        shape = (len(users), self.config.auc_negatives)
        negatives = torch.randint(len(self.x_items), shape, generator=generator).to(self.device)
        clash = self.known.contains(users.unsqueeze(1).expand_as(negatives), negatives) | (
            negatives == positives[:, None]
        )
        item_emb = model.items.sc_embedding(self.features(model, "item"))
        user_emb = model.users.sc_embedding(self.features(model, "user", users))
        auc = u2i_auc(user_emb, item_emb[positives], item_emb[negatives], ~clash)
        model.train()
        return auc

    def run_epoch(self, model, optimizer, alpha: float, gamma: float, streams, generator, quantising: bool) -> dict:
        """One pass over the training pairs in random batches; every ablation takes the same number of steps.
        `quantising`: phase 2, where the regularisers act and AdaSID's progress (Eq. 11) counts the steps."""
        sums: dict[str, float] = {}
        order = torch.randperm(len(self.pairs), generator=generator).to(self.device)
        batches = self.pairs[order].split(self.config.batch_size)
        for batch in batches:
            losses = self.batch_loss(model, batch, alpha, gamma, streams, quantising)
            values = {name: value.item() for name, value in losses.items()}
            diverged = next((name for name, value in values.items() if not math.isfinite(value)), None)
            if diverged is not None:
                raise ConfigError(
                    f"the SCID tokenizer's training diverged: its {diverged} loss is {values[diverged]} "
                    f"(alpha {alpha}, gamma {gamma}); lower tokenize.lr (now {self.config.lr})"
                )
            optimizer.zero_grad()
            losses["total"].backward()
            optimizer.step()
            self.step += quantising
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
        return {name: value / len(batches) for name, value in sums.items()}

    @torch.no_grad()
    def revive(self, model: DualTokenizer, generator: torch.Generator) -> int:
        """Re-seed unused codes of both sides on the current latents (dead-code restart, not in Align3GR)."""
        moved = model.items.quantizer.revive_dead_codes(model.items.latent(self.features(model, "item")), generator)
        if model.users is not None:
            users = model.users.latent(self.features(model, "user"))
            moved += model.users.quantizer.revive_dead_codes(users, generator)
        return moved

    def train(self) -> DualTokenizer:
        config = self.config
        with seeded(config.seed, self.device) as generator:
            self.generator = generator
            model = self.new_model()
            parameters = list(model.parameters()) + (list(self.das.parameters()) if self.das is not None else [])
            optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
            streams = {
                "items": cycle_chunks(len(self.x_items), config.rq_batch_size, generator, self.device),
                "users": cycle_chunks(len(self.x_users), config.rq_batch_size, generator, self.device),
                "item_pairs": cycle_chunks(len(self.item_pairs), self.quasid.batch_size, generator, self.device),
            }
            if config.u2i:
                stopping = EarlyStopping([model, self.das], config.auc_patience)  # DAS trains with the tokenizer
                for epoch in (
                    bar := tqdm(range(1, config.phase1_max_epochs + 1), desc="tokenizer phase 1", unit="epoch")
                ):
                    losses = self.run_epoch(
                        model, optimizer, config.phase1_alpha, config.phase1_gamma, streams, generator, False
                    )
                    auc = self.validation_auc(model, generator)
                    self.history.phase1.append({"epoch": epoch, "valid_auc": auc, **losses})
                    bar.set_postfix(u2i=f"{losses.get('u2i', 0):.3f}", valid_auc=f"{auc:.4f}")
                    if stopping.update(auc):
                        break
                log.info("phase 1: validation U2I AUC %.4f, switching to quantisation", stopping.restore())
            with torch.no_grad():
                model.items.quantizer.init_codebooks(model.items.latent(self.features(model, "item")), generator)
                if model.users is not None:
                    model.users.quantizer.init_codebooks(model.users.latent(self.features(model, "user")), generator)
            alpha = config.phase2_alpha if config.u2i else 0.0
            self.adasid.t_start = config.adasid_options.get("t_start", 0)
            self.adasid.t_end = config.adasid_options.get("t_end", self.steps_per_epoch * config.phase2_epochs)
            for epoch in (bar := tqdm(range(1, config.phase2_epochs + 1), desc="tokenizer phase 2", unit="epoch")):
                losses = self.run_epoch(model, optimizer, alpha, config.phase2_gamma, streams, generator, True)
                auc = self.validation_auc(model, generator)
                row = {"epoch": epoch, "valid_auc": auc}
                if config.revive_dead_codes:
                    row["revived_codes"] = self.revive(model, generator)
                self.history.phase2.append(row | losses)
                bar.set_postfix(rq=f"{losses.get('rq_item', 0):.3f}", valid_auc=f"{auc:.4f}")
        return model.eval()
