"""Residual quantisation (RQ-VAE, Lee et al. 2022) as used by Align3GR for each side of the dual tokenizer:
an encoder (the Semantic-Collaborative encoder), L levels of residual vector quantisation with a
straight-through estimator, and a decoder that reconstructs the encoder's input from the quantised vector.

Per level l, with residual r_l and chosen code e_l: codebook loss ||sg[r_l] - e_l||^2 and commitment loss
beta * ||r_l - sg[e_l]||^2 (beta = 0.25); the RQ loss of Eq. 2 is reconstruction + both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from align3gr.tokenize.kmeans import kmeans, squared_distances


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


@dataclass
class Quantized:
    """What the quantiser returns: the straight-through vector, codes [N, L] and the two losses."""

    vector: torch.Tensor
    codes: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


class ResidualQuantizer(nn.Module):
    """L codebooks of K vectors of dimension d; each level quantises what the levels before left over."""

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
        """k-means on the data's residuals, level by level."""
        if len(z) < self.codebook_size:
            raise ValueError(
                f"{len(z)} vectors cannot initialise codebooks of {self.codebook_size} codes; "
                "lower codebook_size to at most the number of users or items"
            )
        residual = z.detach().float()
        for level in range(self.levels):
            self.codebooks[level] = kmeans(residual, self.codebook_size, generator=generator)
            residual = residual - self.codebooks[level][squared_distances(residual, self.codebooks[level]).argmin(1)]

    def forward(self, z: torch.Tensor) -> Quantized:
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
        """Move codes no vector of `z` uses onto randomly drawn residuals of `z` at their level, so every code
        stays on the data (unused codes otherwise never receive a gradient); returns how many were moved."""
        residual = z.detach().float()
        moved = 0
        for level in range(self.levels):
            book = self.codebooks[level]
            index = squared_distances(residual, book).argmin(1)
            dead = (torch.bincount(index, minlength=self.codebook_size) == 0).nonzero().flatten()
            if len(dead):
                picks = torch.randint(len(residual), (len(dead),), generator=generator)
                book[dead] = residual[picks]
                moved += len(dead)
            residual = residual - book[squared_distances(residual, book).argmin(1)]
        return moved

    @torch.no_grad()
    def last_level_distances(self, z: torch.Tensor) -> torch.Tensor:
        """[N, K] squared distances of each vector's last residual to every code of the last level."""
        residual = z
        for level in range(self.levels - 1):
            book = self.codebooks[level]
            residual = residual - book[squared_distances(residual, book).argmin(1)]
        return squared_distances(residual, self.codebooks[-1])

    @torch.no_grad()
    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The quantised vector of codes [N, L]."""
        return sum(self.codebooks[level][codes[:, level]] for level in range(self.levels))


@dataclass
class RQOutput:
    """Encoder output, quantisation, reconstruction and the RQ loss (reconstruction + quantisation)."""

    embedding: torch.Tensor
    quantized: Quantized
    reconstruction: torch.Tensor
    loss: torch.Tensor


class RQVAE(nn.Module):
    """Encoder -> residual quantiser -> decoder; the encoder is the side's Semantic-Collaborative encoder."""

    def __init__(
        self,
        input_dim: int,
        hidden_dims: list[int],
        levels: int = 3,
        codebook_size: int = 256,
        code_dim: int = 32,
        beta: float = 0.25,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = mlp([input_dim, *hidden_dims, code_dim], dropout)
        self.quantizer = ResidualQuantizer(levels, codebook_size, code_dim, beta)
        self.decoder = mlp([code_dim, *reversed(hidden_dims), input_dim], dropout)

    def forward(self, x: torch.Tensor) -> RQOutput:
        embedding = self.encoder(x)
        quantized = self.quantizer(embedding)
        reconstruction = self.decoder(quantized.vector)
        recon_loss = (reconstruction - x).pow(2).sum(1).mean()
        loss = recon_loss + quantized.codebook_loss + quantized.commitment_loss
        return RQOutput(embedding, quantized, reconstruction, loss)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
        """Codes [N, L] of inputs [N, input_dim], batched so millions of rows fit in memory."""
        return torch.cat([self.quantizer(self.encoder(chunk)).codes for chunk in x.split(batch_size)])
