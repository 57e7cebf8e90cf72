"""Residual quantisation (RQ-VAE, Lee et al. 2022) as Align3GR uses it for each side of the dual tokenizer
("Token-level Alignment" and implementation details: 3 levels of 256 codes of dimension 32): an encoder, L levels
of residual vector quantisation with a straight-through estimator, and a decoder that reconstructs the encoder's
input from the quantised vector.

With r_0 = z and, per level l, the nearest code q_l of r_{l-1} and r_l = r_{l-1} - q_l (QuaSID Eq. 4), the RQ
loss of Align3GR Eq. 2 is, averaged over the batch (QuaSID Eq. 5a-5b):

    ||x - x_hat||^2 + sum_l ( ||sg[r_{l-1}] - q_l||^2 + beta * ||r_{l-1} - sg[q_l]||^2 ),   beta = 0.25

By default the RQ-VAE's encoder is also the side's Semantic-Collaborative (SC) encoder, so the SC embedding that
the U2I loss aligns is the code_dim latent and x is [semantic; collaborative]. Align3GR's Figure 2b quantises the
SC embedding with an RQ-VAE of its own: with `sc_dim` > 0 a separate SC encoder maps x to an sc_dim SC embedding,
which the RQ-VAE encodes, quantises and reconstructs (x above is then the SC embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from align3gr.tokenize.kmeans import CHUNK_ROWS, kmeans, nearest, squared_distances


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


@dataclass
class Quantized:
    """What the quantiser returns: the straight-through vector, codes [N, L] and the two quantisation losses."""

    vector: torch.Tensor
    codes: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


class ResidualQuantizer(nn.Module):
    """L codebooks of K vectors of dimension d; each level quantises what the levels before it left over."""

    def __init__(self, levels: int = 3, codebook_size: int = 256, dim: int = 32, beta: float = 0.25) -> None:
        super().__init__()
        self.codebooks = nn.Parameter(torch.randn(levels, codebook_size, dim) * 0.1)
        self.beta = beta

    @property
    def levels(self) -> int:
        return self.codebooks.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.codebooks.shape[1]

    @torch.no_grad()
    def init_codebooks(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means of each level on the residuals the levels before leave on `z` [N, d]; deterministic given the
        generator. Fewer vectors than codes per level is an error: lower the codebook size instead."""
        if len(z) < self.codebook_size:
            raise ValueError(
                f"{len(z)} vectors cannot initialise codebooks of {self.codebook_size} codes (k-means needs at least "
                f"one vector per code); set the codebook size to at most {len(z)}"
            )
        residual = z.detach().float()
        for level in range(self.levels):
            self.codebooks[level] = kmeans(residual, self.codebook_size, generator=generator)
            residual = residual - self.codebooks[level][nearest(residual, self.codebooks[level])[0]]

    def forward(self, z: torch.Tensor) -> Quantized:
        """Quantise `z` [N, d]; `vector` equals the sum of the chosen codes but passes gradients straight to `z`."""
        residual = z
        total = torch.zeros_like(z)
        codes, codebook_loss, commitment_loss = [], z.new_zeros(()), z.new_zeros(())
        for level in range(self.levels):
            book = self.codebooks[level]
            index = squared_distances(residual.detach(), book.detach()).argmin(1)
            chosen = book[index]
            codebook_loss = codebook_loss + (residual.detach() - chosen).pow(2).sum(1).mean()
            commitment_loss = commitment_loss + self.beta * (residual - chosen.detach()).pow(2).sum(1).mean()
            total = total + chosen
            residual = residual - chosen.detach()
            codes.append(index)
        vector = z + (total - z).detach()
        return Quantized(vector, torch.stack(codes, 1), codebook_loss, commitment_loss)

    @torch.no_grad()
    def revive_dead_codes(self, z: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Move the codes no vector of `z` uses onto distinct randomly drawn residuals of `z` at their level (unused
        codes otherwise never receive a gradient); deterministic given the generator. Returns how many moved."""
        residual = z.detach().float()
        moved = 0
        for level in range(self.levels):
            book = self.codebooks[level]
            dead = (torch.bincount(nearest(residual, book)[0], minlength=self.codebook_size) == 0).nonzero().flatten()
            if len(dead):
                picks = torch.randperm(len(residual), generator=generator)[: len(dead)].to(residual.device)
                book[dead[: len(picks)]] = residual[picks]
                moved += len(picks)
            residual = residual - book[nearest(residual, book)[0]]
        return moved

    @torch.no_grad()
    def last_level_residuals(self, z: torch.Tensor) -> torch.Tensor:
        """[N, d] what the levels before the last leave of each vector: the input of the last level."""
        residual = z
        for level in range(self.levels - 1):
            book = self.codebooks[level]
            residual = residual - book[nearest(residual, book)[0]]
        return residual

    @torch.no_grad()
    def last_level_distances(self, z: torch.Tensor) -> torch.Tensor:
        """[N, K] squared distances of each vector's last residual to every code of the last level (the costs of
        `collisions.resolve_collisions`)."""
        return squared_distances(self.last_level_residuals(z), self.codebooks[-1])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The quantised vector [N, d] of codes [N, L]: the sum of their codebook vectors, differentiable in the
        codebooks (DAS's sum-pooled SID representation)."""
        return sum(self.codebooks[level][codes[:, level]] for level in range(self.levels))


@dataclass
class RQOutput:
    """Encoder output, quantisation, reconstruction, and the RQ loss = reconstruction + codebook + commitment."""

    embedding: torch.Tensor
    quantized: Quantized
    reconstruction: torch.Tensor
    reconstruction_loss: torch.Tensor
    loss: torch.Tensor


class RQVAE(nn.Module):
    """[SC encoder ->] encoder -> residual quantiser -> decoder. Without `sc_dim` the encoder is the side's
    Semantic-Collaborative encoder; with it, a separate SC encoder (input_dim -> hidden_dims -> sc_dim) comes
    first and the RQ-VAE (sc_dim -> hidden_dims -> code_dim and back) reconstructs its output."""

    def __init__(
        self,
        input_dim: int,
        hidden_dims: list[int],
        levels: int = 3,
        codebook_size: int = 256,
        code_dim: int = 32,
        beta: float = 0.25,
        dropout: float = 0.0,
        sc_dim: int = 0,
    ) -> None:
        super().__init__()
        self.sc_encoder = mlp([input_dim, *hidden_dims, sc_dim], dropout) if sc_dim else None
        rq_input = sc_dim or input_dim
        self.encoder = mlp([rq_input, *hidden_dims, code_dim], dropout)
        self.quantizer = ResidualQuantizer(levels, codebook_size, code_dim, beta)
        self.decoder = mlp([code_dim, *reversed(hidden_dims), rq_input], dropout)

    def sc_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The SC embedding of inputs [N, input_dim] (Align3GR's SC_u / SC_i, what the U2I loss aligns)."""
        return self.encoder(x) if self.sc_encoder is None else self.sc_encoder(x)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """What the quantiser reads for inputs [N, input_dim]: the encoder's output (the SC embedding by default)."""
        return self.encoder(x if self.sc_encoder is None else self.sc_encoder(x))

    def forward(self, x: torch.Tensor) -> RQOutput:
        target = x if self.sc_encoder is None else self.sc_encoder(x)
        embedding = self.encoder(target)
        quantized = self.quantizer(embedding)
        reconstruction = self.decoder(quantized.vector)
        # the reconstruction target is the SC embedding detached: otherwise shrinking a separate SC encoder's output
        # would lower this loss and undo phase 1's U2I alignment (the commitment term, HaMR and AdaSID still reach
        # that encoder through the RQ encoder's input)
        reconstruction_loss = (reconstruction - target.detach()).pow(2).sum(1).mean()
        loss = reconstruction_loss + quantized.codebook_loss + quantized.commitment_loss
        return RQOutput(embedding, quantized, reconstruction, reconstruction_loss, loss)

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means initialisation of every level on the latents of the inputs `x` [N, input_dim]."""
        self.quantizer.init_codebooks(torch.cat([self.latent(chunk) for chunk in x.split(CHUNK_ROWS)]), generator)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        """Codes [N, L] (int64) of inputs [N, input_dim], in batches (2,048 rows is fastest on CPU: larger batches
        spill the [batch, codes] distance matrices out of cache; see benchmarks/rqvae_scale.py)."""
        return torch.cat([self.quantizer(self.latent(chunk)).codes for chunk in x.split(batch_size)])
