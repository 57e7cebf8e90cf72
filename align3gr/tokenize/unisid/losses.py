"""UniSID's objectives (UniSID Eq. 5, 6, 10, 11).

A batch holds two views of each of its items. Eq. 5, the multi-granularity contrastive loss, is a supervised
contrastive loss per SID level on the level's logits z^l under cosine similarity: an anchor's positives at level l
are the other sequences with the same label at l (items sharing the category at that depth, else only the item's
other view), its candidates all other sequences of the batch, positives included. Eq. 6, the embedding contrastive
loss, has the other view as the one positive and sums its denominator over the negatives N_i only (the other
items' sequences), as the paper writes it. Eq. 10 is the next-token cross-entropy of the item's summary under a
frozen causal LM whose first input is the reconstruction head's output, summed over the summary's tokens (the
batch's items averaged), so lambda = 0.1 weighs a whole summary as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive(z: torch.Tensor, positives: torch.Tensor, candidates: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over anchors (rows with a positive and a candidate) of -1/|P| sum_p log(exp(sim(z_i, z_p)/tau) /
    sum_{a in A} exp(sim(z_i, z_a)/tau)), sim the cosine similarity, P and A the boolean masks [B, B]
    `positives` and `candidates`; 0 when no row is an anchor (a process's share of one item under DDP)."""
    z = F.normalize(z, dim=-1)
    anchors = positives.any(1) & candidates.any(1)
    similarity = (z @ z.T / temperature)[anchors]
    positives, candidates = positives[anchors], candidates[anchors]
    log_denominator = similarity.masked_fill(~candidates, float("-inf")).logsumexp(1)
    mean_positive = (similarity * positives).sum(1) / positives.sum(1)
    return (log_denominator - mean_positive).sum() / max(len(similarity), 1)


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """One level of Eq. 5: the positives are the other rows with the anchor's label, the candidates all other
    rows."""
    others = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    return contrastive(z, (labels.unsqueeze(0) == labels.unsqueeze(1)) & others, others, temperature)


def multi_granularity_loss(sid_logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 5: the mean over the L levels of the supervised contrastive loss of the level's logits [B, L, K] under
    the level's labels [B, L]."""
    levels = sid_logits.shape[1]
    return sum(supervised_contrastive(sid_logits[:, i], labels[:, i], temperature) for i in range(levels)) / levels


def embedding_contrastive(embedding: torch.Tensor, items: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 6: the contrastive loss of the embeddings [B, D], the positive of each row being the other view of its
    item (`items` [B] holds each item's index twice), the denominator summing over the other items' rows only."""
    same = items.unsqueeze(0) == items.unsqueeze(1)
    others = ~torch.eye(len(embedding), dtype=torch.bool, device=embedding.device)
    return contrastive(embedding, same & others, ~same, temperature)


def summary_reconstruction_loss(
    reconstructor, prefix: torch.Tensor, summary_ids: torch.Tensor, summary_mask: torch.Tensor
) -> torch.Tensor:
    """Eq. 10: the frozen LM reads h_rec (`prefix` [B, H]) as its first input embedding, then the summary tokens;
    the output at each position predicts the next summary token. The sum over each summary's tokens
    (`summary_mask`), averaged over the batch's summaries."""
    embeddings = reconstructor.get_input_embeddings()(summary_ids)
    inputs = torch.cat([prefix.unsqueeze(1).to(embeddings.dtype), embeddings], dim=1)
    mask = torch.cat([torch.ones_like(summary_mask[:, :1]), summary_mask], dim=1)
    logits = reconstructor(inputs_embeds=inputs, attention_mask=mask).logits[:, :-1]
    targets = summary_ids.masked_fill(summary_mask == 0, -100)
    summed = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum")
    return summed / len(summary_ids)


def unisid_losses(output, labels: torch.Tensor, items: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
    """The terms of Eq. 11 on one batch (a `UniSIDOutput`, labels [B, L] of Eq. 5, item index [B] of each row):
    `sid` (Eq. 5), `emb` (Eq. 6) and `rec` (Eq. 10, when the forward computed it)."""
    losses = {
        "sid": multi_granularity_loss(output.sid_logits, labels, temperature),
        "emb": embedding_contrastive(output.embedding, items, temperature),
    }
    if output.reconstruction_loss is not None:
        losses["rec"] = output.reconstruction_loss
    return losses


def total_loss(losses: dict[str, torch.Tensor], reconstruction_weight: float) -> torch.Tensor:
    """Eq. 11: L_sid + L_emb + lambda * L_rec (L_rec absent when lambda is 0)."""
    total = losses["sid"] + losses["emb"]
    return total + reconstruction_weight * losses["rec"] if "rec" in losses else total
