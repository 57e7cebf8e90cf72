"""Options of the `tokenize` stage: the dual SCID tokenizer (Align3GR Eq. 1-2, Table 3, implementation details),
its optional regularisers (DAS, QuaSID, AdaSID), the toolkit's additions beyond the papers, and the choice of item
tokenizer (the dual one, or UniSID)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from align3gr.config import OMITTED, options_field
from align3gr.devices import check_device, device_field
from align3gr.errors import ConfigError, check_numbers
from align3gr.scid.tokens import MAX_LEVELS
from align3gr.tokenize.losses.adasid import AdaSIDConfig
from align3gr.tokenize.losses.das import DASConfig
from align3gr.tokenize.losses.das_cf import DASCFConfig
from align3gr.tokenize.losses.hamr import HaMRConfig
from align3gr.tokenize.losses.quasid_cl import QuaSIDCLConfig
from align3gr.tokenize.unisid.config import UniSIDConfig

ITEM_TOKENIZERS = ("dual", "unisid")


@dataclass
class TokenizeConfig:
    """Dual user/item SC encoders with one RQ-VAE per side, the U2I loss, and the two-phase schedule; the item codes
    from the item RQ-VAE or from UniSID (`item_tokenizer`)."""

    section = "tokenize"

    dual: bool = field(default=True, metadata={"help": "Tokenize users too (Table 3 'Dual'); off: item-only."})
    use_cf: bool = field(default=True, metadata={"help": "Concatenate collaborative features (Table 3 'CF')."})
    u2i: bool = field(default=True, metadata={"help": "Train with the U2I behaviour loss (Table 3 'U-I Alignment')."})
    levels: int = field(default=3, metadata={"help": "Code levels per side (UniSID's L too)."})
    codebook_size: int = field(default=256, metadata={"help": "Codes per level of items (UniSID's K too)."})
    user_codebook_size: int = field(default=256, metadata={"help": "Codes per level (users)."})
    code_dim: int = field(
        default=32, metadata={"help": "Dimension of each code vector (and of the SC embedding unless sc_dim is set)."}
    )
    hidden_dims: list[int] = field(default_factory=lambda: [256, 128], metadata={"help": "SC encoder MLP sizes."})
    beta: float = field(default=0.25, metadata={"help": "Commitment weight of the RQ loss."})
    phase1_alpha: float = field(default=1.0, metadata={"help": "U2I weight until the validation AUC stops improving."})
    phase1_gamma: float = field(
        default=0.0, metadata={"help": "RQ weight in phase 1 (HaMR, AdaSID and DAS act in phase 2 only)."}
    )
    phase2_alpha: float = field(default=0.1, metadata={"help": "U2I weight after the switch."})
    phase2_gamma: float = field(default=1.0, metadata={"help": "RQ weight after the switch."})
    phase1_max_epochs: int = field(default=30, metadata={"help": "Upper bound on phase-1 epochs."})
    auc_patience: int = field(default=2, metadata={"help": "Epochs without a better validation AUC before the switch."})
    phase2_epochs: int = field(default=20, metadata={"help": "Epochs of phase 2 (quantisation)."})
    batch_size: int = field(default=2048, metadata={"help": "Training (user, item) pairs per step (U2I)."})
    rq_batch_size: int = field(default=512, metadata={"help": "Items and users per step for the RQ losses."})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    auc_negatives: int = field(default=100, metadata={"help": "Sampled negative items per validation user for AUC."})
    hamr: bool = field(default=False, metadata={"help": "Add QuaSID's HaMR + CVPM repulsion (Eq. 8-13) in phase 2."})
    hamr_options: dict = options_field(HaMRConfig, "HaMRConfig fields (YAML).")
    adasid: bool = field(
        default=False,
        metadata={"help": "Add AdaSID's adaptive collision regulation (Eq. 2-13) in phase 2, weighted by its Eq. 12 "
                  "lambda_col; with u2i, its collaborative term lambda_cf * L_cf (Eq. 14) is the U2I loss, whose "
                  "weight becomes alpha + lambda_cf."},
    )  # fmt: skip
    adasid_options: dict = options_field(
        AdaSIDConfig,
        "AdaSIDConfig fields (YAML); t_start/t_end count phase-2 optimiser steps (one per batch of training pairs) "
        "and default to the start and end of phase 2 here (AdaSIDConfig's own t_start and t_end below are the "
        "paper's step counts, used only when AdaSIDConfig is built directly).",
    )
    das: bool = field(default=False, metadata={"help": "Add DAS multi-view contrastive alignment (Eq. 5-10)."})
    das_options: dict = options_field(DASConfig, "DASConfig fields (YAML).")
    das_cf: bool = field(
        default=False,
        metadata={"help": "Co-train DAS's ID-based CF model with the quantisers from the first step (DAS one-stage "
                  "co-training, 2.2, Eq. 3-4): its own loss alpha * L_CF_all with popularity and conformity "
                  "debiasing; its debiased representations replace the frozen collaborative features in the "
                  "tokenizer input (use_cf) and in DAS's alignment (das). Needs use_cf or das."},
    )  # fmt: skip
    das_cf_options: dict = options_field(DASCFConfig, "DASCFConfig fields (YAML).")
    quasid_cl: bool = field(
        default=False,
        metadata={"help": "Add QuaSID's dual-tower contrastive loss on item co-engagement pairs (QuaSID Eq. 6-7) "
                  "in both phases; its pair batch is then the item batch of the RQ loss, HaMR and AdaSID. With "
                  "hamr, dual/use_cf/u2i off, the objective is QuaSID's Eq. 14."},
    )  # fmt: skip
    quasid_cl_options: dict = options_field(QuaSIDCLConfig, "QuaSIDCLConfig fields (YAML).")
    revive_dead_codes: bool = field(
        default=True,
        metadata={"help": "After every phase-2 epoch, the last included, move the codes no item (user) uses onto "
                  "random residuals (dead-code restart; not in Align3GR): the published codebooks may hold such "
                  "rows, seeded on a residual but never trained (3 codes in the default run's last epoch)."},
    )  # fmt: skip
    disambiguation_level: bool = field(
        default=True,
        metadata={"help": "Where a code prefix holds more items than the last level has codes, add a level that "
                  "numbers them so item codes stay unique (not in Align3GR); off: such a table is an error."},
    )  # fmt: skip
    regularize_users: bool = field(
        default=True,
        metadata={"help": "Apply HaMR and AdaSID to the user RQ-VAE too (not in the papers: QuaSID and AdaSID "
                  "tokenize items)."},
    )  # fmt: skip
    sc_dim: int = field(
        default=0,
        metadata={"help": "0: the RQ-VAE's encoder is the SC encoder, so the SC embedding has code_dim dimensions "
                  "(not in Align3GR); > 0: a separate SC encoder makes sc_dim-dimensional SC embeddings, which the "
                  "RQ-VAE encodes, quantises and reconstructs (Align3GR Figure 2b)."},
    )  # fmt: skip
    item_tokenizer: str = field(
        default="dual",
        metadata={"help": "Item codes from the dual RQ-VAE tokenizer ('dual') or from UniSID ('unisid'; users "
                  "still get the dual tokenizer's codes).", "choices": ITEM_TOKENIZERS},
    )  # fmt: skip
    unisid_options: dict = options_field(UniSIDConfig, "UniSIDConfig fields (YAML).")
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, k-means and batching."})
    device: str = device_field(
        "Device of the dual tokenizer (training, k-means, encoding): auto (the accelerator, else the CPU), cpu, "
        "cuda, cuda:1, mps, xpu, ...; UniSID trains on the CPU when it resolves to the CPU, else on Accelerate's "
        "device of each process.",
        fingerprint=OMITTED,
    )

    def validate(self) -> None:
        check_device(type(self), self.device, "device")
        if self.u2i and not self.dual:
            raise ConfigError("u2i=True needs dual=True: the U2I loss aligns user and item SC embeddings")
        if self.das and not (self.dual and (self.use_cf or self.das_cf)):
            raise ConfigError(
                "das=True aligns codes with collaborative features of both sides: needs dual and use_cf (or das_cf, "
                "whose co-trained CF model gives them)"
            )
        if self.das_cf and not (self.use_cf or self.das):
            raise ConfigError(
                "das_cf=True co-trains a CF model whose representations feed the tokenizer input (use_cf) or DAS's "
                "alignment (das): needs use_cf or das"
            )
        for options, cls in (
            (self.hamr_options, HaMRConfig),
            (self.adasid_options, AdaSIDConfig),
            (self.das_options, DASConfig),
            (self.das_cf_options, DASCFConfig),
            (self.quasid_cl_options, QuaSIDCLConfig),
            (self.unisid_options, UniSIDConfig),
        ):
            unknown = sorted(set(options) - {f.name for f in fields(cls)})
            if unknown:
                raise ConfigError(
                    f"{cls.__name__} has no option {unknown[0]!r}; options: {', '.join(f.name for f in fields(cls))}"
                )
            cls(**options)  # the option class's own checks, before any work
        if self.item_tokenizer not in ITEM_TOKENIZERS:
            raise ConfigError(f"item_tokenizer={self.item_tokenizer!r}: expected one of {', '.join(ITEM_TOKENIZERS)}")
        positive = ("levels", "codebook_size", "user_codebook_size", "code_dim", "batch_size", "rq_batch_size",
                    "auc_negatives", "auc_patience")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        check_numbers(self, ("phase1_max_epochs", "phase2_epochs", "beta", "phase1_alpha", "phase1_gamma",
                             "phase2_alpha", "phase2_gamma", "weight_decay"))  # fmt: skip
        check_numbers(self, ("lr",), positive=True)
        if self.levels > MAX_LEVELS - 1:
            raise ConfigError(
                f"levels={self.levels}: at most {MAX_LEVELS - 1} (a code level is a letter of its tokens, and "
                "collision resolution may add one level)"
            )
        if any(size < 1 for size in self.hidden_dims):
            raise ConfigError(f"hidden_dims={self.hidden_dims}: every layer size must be >= 1")
        if self.sc_dim < 0:
            raise ConfigError(f"sc_dim={self.sc_dim}: must be >= 0 (0: the SC embedding is the RQ-VAE's latent)")
        if self.dual or self.item_tokenizer != "unisid":  # the dual tokenizer trains: users, or items too
            self.check_dual_training()

    def check_dual_training(self) -> None:
        """AdaSID has one threshold per code level, and each phase that runs trains some loss: U2I (u2i, alpha > 0),
        RQ (gamma > 0, which also carries DAS, HaMR and AdaSID) or a loss of both phases (das_cf, quasid_cl).
        Otherwise the first step would fail, or the phase would have nothing to differentiate."""
        if self.adasid and len(eta := AdaSIDConfig(**self.adasid_options).eta) != self.levels:
            raise ConfigError(
                f"adasid_options.eta={eta}: AdaSID needs one threshold per overlap depth 1..L, {self.levels} for "
                f"levels={self.levels}"
            )
        both = self.quasid_cl or (self.das_cf and DASCFConfig(**self.das_cf_options).alpha > 0)
        phases = [(1, self.phase1_alpha, self.phase1_gamma, self.phase1_max_epochs)] if self.u2i else []
        phases.append((2, self.phase2_alpha if self.u2i else 0.0, self.phase2_gamma, self.phase2_epochs))
        for phase, alpha, gamma, epochs in phases:
            if epochs > 0 and alpha == 0 and gamma == 0 and not both:
                u2i = f"phase{phase}_alpha=0" if self.u2i else "u2i=False"
                raise ConfigError(
                    f"phase {phase} trains no loss: {u2i} and phase{phase}_gamma=0, without das_cf or quasid_cl; set "
                    f"phase{phase}_gamma > 0 (RQ)" + (f" or phase{phase}_alpha > 0 (U2I)" if self.u2i else "")
                )
