"""UniSID's objectives (seed 004, Eq. 5, 6, 10, 11).

A batch holds two views of each of its items. Eq. 5, the multi-granularity contrastive loss, is a supervised
contrastive loss per SID level on the level's logits z^l under cosine similarity: an anchor's positives at level l
are the other sequences with the same label at l (items sharing the category at that depth; at the deepest level
only the item's other view), its candidates all other sequences of the batch. Eq. 6, the embedding InfoNCE, is the
same loss on z^Emb with the other view as the one positive (the positive is in the denominator, as in standard
InfoNCE). Eq. 10 is the next-token cross-entropy of the item's summary under a frozen causal LM whose first input
is the reconstruction head's output, averaged over the summary tokens of the batch (standard cross-entropy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over anchors with a positive of -1/|P| sum_p log(exp(sim(z_i, z_p)/tau) / sum_{a != i} exp(sim(z_i,
    z_a)/tau)), where P are the other rows with the anchor's label and sim is the cosine similarity."""
    z = F.normalize(z, dim=-1)
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    similarity = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positives = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_mask
    counts = positives.sum(1)
    anchors = counts > 0
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1)[anchors] / counts[anchors]
    return per_anchor.mean()


def multi_granularity_loss(sid_logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 5: the mean over the L levels of the supervised contrastive loss of the level's logits [B, L, K] under
    the level's labels [B, L]."""
    levels = sid_logits.shape[1]
    return sum(supervised_contrastive(sid_logits[:, i], labels[:, i], temperature) for i in range(levels)) / levels


def embedding_infonce(embedding: torch.Tensor, items: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 6: InfoNCE of the embeddings [B, D], the positive of each row being the other view of its item
    (`items` [B] holds each item's index twice), every other row a negative."""
    return supervised_contrastive(embedding, items, temperature)


def summary_reconstruction_loss(
    reconstructor, prefix: torch.Tensor, summary_ids: torch.Tensor, summary_mask: torch.Tensor
) -> torch.Tensor:
    """Eq. 10: the frozen LM reads h_rec (`prefix` [B, H]) as its first input embedding, then the summary tokens;
    the output at each position predicts the next summary token. Mean over the summary tokens (`summary_mask`)."""
    embeddings = reconstructor.get_input_embeddings()(summary_ids)
    inputs = torch.cat([prefix.unsqueeze(1).to(embeddings.dtype), embeddings], dim=1)
    mask = torch.cat([torch.ones_like(summary_mask[:, :1]), summary_mask], dim=1)
    logits = reconstructor(inputs_embeds=inputs, attention_mask=mask).logits[:, :-1]
    targets = summary_ids.masked_fill(summary_mask == 0, -100)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


def unisid_losses(output, labels: torch.Tensor, items: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
    """The terms of Eq. 11 on one batch (a `UniSIDOutput`, labels [B, L] of Eq. 5, item index [B] of each row):
    `sid` (Eq. 5), `emb` (Eq. 6) and `rec` (Eq. 10, when the forward computed it)."""
    losses = {
        "sid": multi_granularity_loss(output.sid_logits, labels, temperature),
        "emb": embedding_infonce(output.embedding, items, temperature),
    }
    if output.reconstruction_loss is not None:
        losses["rec"] = output.reconstruction_loss
    return losses


def total_loss(losses: dict[str, torch.Tensor], reconstruction_weight: float) -> torch.Tensor:
    """Eq. 11: L_sid + L_emb + lambda * L_rec (L_rec absent when lambda is 0)."""
    total = losses["sid"] + losses["emb"]
    return total + reconstruction_weight * losses["rec"] if "rec" in losses else total
