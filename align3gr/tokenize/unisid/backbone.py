"""UniSID's language models: the Qwen2.5-VL backbone (a checkpoint, or the tiny one built from the data) with the
SID and embedding tokens added, what of it trains (the language model fully or through LoRA; the vision tower
never, UniSID A.3), and the frozen causal LM of the summary reconstruction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from align3gr.errors import ConfigError
from align3gr.models.loading import load_model_and_tokenizer, resolve_dtype
from align3gr.models.lora import module_name
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.models.tiny_vl import build_tiny_qwen2_5_vl
from align3gr.options import TINY
from align3gr.tokenize.unisid.config import UniSIDConfig
from align3gr.tokenize.unisid.schema import ItemInput

log = logging.getLogger(__name__)


def load_backbone(path: str, dtype: str):
    """(Qwen2_5_VLForConditionalGeneration, tokenizer, image processor) of a checkpoint folder or Hub id."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"unisid_options.model={path!r}: cannot load a model config: {err}") from None
    if config.model_type != "qwen2_5_vl":
        raise ConfigError(
            f"unisid_options.model={path!r} is a {config.model_type!r} model; UniSID needs a Qwen2.5-VL checkpoint "
            "(model_type 'qwen2_5_vl')"
        )
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=resolve_dtype(dtype))
    return model, AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)


def language_model_targets(names: Sequence[str]) -> str:
    """A regex over full module names selecting `names` inside the language model only (the vision blocks have
    gate/up/down projections too, and the vision tower stays frozen)."""
    return rf".*\.language_model\..*\.({'|'.join(map(re.escape, names))})"


def make_trainable(model, token_ids: Sequence[int], options: UniSIDConfig):
    """The backbone as it trains: a LoRA adapter on the language model plus the new tokens' embedding rows, or the
    whole language model with the vision tower and an untied vocabulary head (never read) frozen."""
    if options.use_lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=options.lora_r,
            lora_alpha=options.lora_alpha,
            lora_dropout=options.lora_dropout,
            target_modules=language_model_targets(options.lora_target_modules),
            trainable_token_indices={module_name(model, model.get_input_embeddings()): list(token_ids)},
        )
        return get_peft_model(model, config)
    model.model.visual.requires_grad_(False)
    head = model.get_output_embeddings()
    if head.weight is not model.get_input_embeddings().weight:
        head.requires_grad_(False)
    return model


def load_reconstructor(path: str, dtype: str):
    """(frozen causal LM in eval mode, its tokenizer): the LLM of Eq. 10."""
    model, tokenizer = load_model_and_tokenizer(path, dtype=dtype)
    model.requires_grad_(False)
    return model.eval(), tokenizer


def model_paths(options: UniSIDConfig, work: Path) -> tuple[str, str | None]:
    """Where the backbone and the reconstruction LM load from: the tiny ones are built in `work`; no
    reconstruction LM when lambda is 0."""
    backbone = str(work / "backbone") if options.model == TINY else options.model
    if options.reconstruction_weight == 0:
        return backbone, None
    reconstructor = options.reconstruction_model
    return backbone, str(work / "reconstructor") if reconstructor == TINY else reconstructor


def tiny_texts(items: Sequence[ItemInput], summaries: Sequence[str], instruction: str) -> Iterator[str]:
    """What the tiny models' tokenizers are trained on: every text the schema and the summaries hold."""
    yield instruction
    yield "Title: Description:"
    for item in items:
        yield item.title
        yield " ".join(item.words)
        yield from (f"{name}: {value}" for name, value in item.attributes)
    yield from summaries


def build_tiny_models(options: UniSIDConfig, texts: list[str], backbone: str, reconstructor: str | None, seed: int):
    """Create the tiny backbone and the tiny reconstruction LM that `model_paths` points to; warn that the latter,
    random and frozen, gives UniSID Eq. 10 no summary semantics to reconstruct with."""
    if options.model == TINY:
        build_tiny_qwen2_5_vl(
            texts, backbone, options.tiny_vocab_size, options.tiny_hidden_size, options.tiny_layers,
            options.tiny_vision_depth, seed=seed,
        )  # fmt: skip
    if reconstructor is not None and options.reconstruction_model == TINY:
        log.warning(
            "UniSID: reconstruction_weight=%g with reconstruction_model=tiny, a random frozen LM that knows no "
            "language: the summary reconstruction (Eq. 10) adds no semantics to the SIDs; give a trained causal LM "
            "(paper: Qwen2.5-3B) or set reconstruction_weight: 0",
            options.reconstruction_weight,
        )
        build_tiny_causal_lm(
            texts, reconstructor, options.tiny_vocab_size, options.tiny_hidden_size, options.tiny_layers, seed=seed
        )
