"""UniSID's model (its sections 3.2 and 3.4): the Qwen2.5-VL backbone (Eq. 1), the SID head and the embedding head on
the hidden states at the SID-token and embedding-token positions (Eq. 2-3), the SIDs by per-level argmax (Eq. 4),
and the reconstruction head (Eq. 8-9) that conditions the frozen LM of Eq. 10.

Saved as an ordinary Qwen2.5-VL folder (a LoRA adapter is merged first) with its tokenizer and image processor,
plus `unisid_heads.safetensors` and `unisid.json`, so `load_unisid` encodes new items the way training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from align3gr.io import read_json, write_json
from align3gr.tokenize.unisid.losses import summary_reconstruction_loss
from align3gr.tokenize.unisid.schema import ItemSchema, ItemView

HEADS_FILE = "unisid_heads.safetensors"
CONFIG_FILE = "unisid.json"


@dataclass
class UniSIDOutput:
    """One forward: per-level SID logits z^l [B, L, K], the item embedding z^Emb [B, D], the hidden states at the
    SID and embedding tokens [Z^SID; Z^Emb] [B, L + 1, H], and the reconstruction loss (when summaries are given)."""

    sid_logits: torch.Tensor
    embedding: torch.Tensor
    hidden: torch.Tensor
    reconstruction_loss: torch.Tensor | None = None


def token_positions(input_ids: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """[B, M]: where each of the M `token_ids` stands in each row of `input_ids`; each must occur once per row."""
    hits = input_ids.unsqueeze(-1) == token_ids
    counts = hits.sum(1)
    if not bool((counts == 1).all()):
        row, token = (counts != 1).nonzero()[0].tolist()
        found = int(counts[row, token])
        raise ValueError(f"row {row} holds token id {int(token_ids[token])} {found} times; expected once")
    return hits.int().argmax(1)


class SIDHead(torch.nn.Module):
    """f_SID (Eq. 2): a linear map, block-diagonal over levels: level l's K logits read the hidden state of SID
    token l, so the output [B, L * K] splits into the L per-level logits."""

    def __init__(self, levels: int, hidden_size: int, codebook_size: int) -> None:
        super().__init__()
        self.levels = torch.nn.ModuleList(torch.nn.Linear(hidden_size, codebook_size) for _ in range(levels))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(hidden[:, level]) for level, head in enumerate(self.levels)], dim=1)


def language_backbone(backbone) -> torch.nn.Module:
    """The Qwen2_5_VLModel inside a Qwen2_5_VLForConditionalGeneration (or its LoRA wrapper): the hidden states
    without the vocabulary head, which UniSID never reads."""
    return (backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone).model


class UniSID(torch.nn.Module):
    """The backbone, the SID and embedding heads, and (for training) the reconstruction head and frozen LM."""

    def __init__(
        self, backbone, token_ids: Sequence[int], codebook_size: int, embedding_dim: int, reconstructor=None
    ) -> None:
        super().__init__()
        hidden = backbone.config.text_config.hidden_size
        levels = len(token_ids) - 1
        self.backbone = backbone
        self.register_buffer("token_ids", torch.tensor(list(token_ids)), persistent=False)
        self.sid_head = SIDHead(levels, hidden, codebook_size)
        self.embedding_head = torch.nn.Linear(hidden, embedding_dim)
        self.reconstructor = reconstructor
        self.reconstruction_head = (
            torch.nn.Linear((levels + 1) * hidden, reconstructor.config.hidden_size) if reconstructor else None
        )

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        summary_ids: torch.Tensor | None = None,
        summary_mask: torch.Tensor | None = None,
    ) -> UniSIDOutput:
        states = language_backbone(self.backbone)(**inputs).last_hidden_state
        positions = token_positions(inputs["input_ids"], self.token_ids)
        hidden = states[torch.arange(len(states)).unsqueeze(1), positions].float()
        output = UniSIDOutput(self.sid_head(hidden[:, :-1]), self.embedding_head(hidden[:, -1]), hidden)
        if summary_ids is not None and self.reconstruction_head is not None:
            prefix = self.reconstruction_head(hidden.flatten(1))
            output.reconstruction_loss = summary_reconstruction_loss(
                self.reconstructor, prefix, summary_ids, summary_mask
            )
        return output

    def heads(self) -> list[tuple[str, torch.nn.Module]]:
        """The heads that make codes and embeddings (saved; the reconstruction head only serves training)."""
        return [("sid_head", self.sid_head), ("embedding_head", self.embedding_head)]

    def save(self, folder: Path, tokenizer, image_processor, document: dict) -> None:
        """Write the backbone (a LoRA adapter merged into it), tokenizer, image processor, heads and `document`
        (the schema settings `load_unisid` needs) into `folder`."""
        if hasattr(self.backbone, "merge_and_unload"):
            self.backbone = self.backbone.merge_and_unload()
        self.backbone.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        image_processor.save_pretrained(folder)
        heads = {f"{name}.{k}": v.contiguous() for name, head in self.heads() for k, v in head.state_dict().items()}
        save_file(heads, str(folder / HEADS_FILE))
        write_json(folder / CONFIG_FILE, document)


def load_unisid(folder: str | Path, dtype: str = "float32") -> tuple[UniSID, ItemSchema, dict]:
    """(model in eval mode, its input schema, its `unisid.json`) of a folder written by `UniSID.save`."""
    from align3gr.tokenize.unisid.backbone import load_backbone

    folder = Path(folder)
    document = read_json(folder / CONFIG_FILE)
    backbone, tokenizer, image_processor = load_backbone(str(folder), dtype)
    token_ids = tokenizer.convert_tokens_to_ids(document["tokens"])
    model = UniSID(backbone, token_ids, document["codebook_size"], document["embedding_dim"])
    weights = load_file(str(folder / HEADS_FILE))
    for name, head in model.heads():
        head.load_state_dict({k.removeprefix(f"{name}."): v for k, v in weights.items() if k.startswith(f"{name}.")})
    schema = ItemSchema(tokenizer, image_processor, backbone.config, document["instruction"], len(token_ids) - 1)
    return model.eval(), schema, document


@torch.no_grad()
def encode_views(
    model: UniSID, schema: ItemSchema, views: list[ItemView], batch_size: int, show_progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(SID logits [N, L, K], embeddings [N, D]) of `views`, in batches; the codes are the logits' argmax (Eq. 4)."""
    logits, embeddings = [], []
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(views), batch_size), desc="UniSID codes", unit="batch", disable=not show_progress):
        batch = {name: value.to(device) for name, value in schema(views[start : start + batch_size]).items()}
        output = model(batch)
        logits.append(output.sid_logits.float().cpu().numpy())
        embeddings.append(output.embedding.float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(embeddings)
