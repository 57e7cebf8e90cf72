"""Loading causal LMs for training and for inference, from a local folder or a Hub id.

Any architecture `AutoModelForCausalLM` knows loads (Llama and Qwen families are tested); `trust_remote_code` is
off unless asked for. `load_for_inference` also reads the `sft/` output folder: a full model loads as is; a LoRA
adapter is applied to its base model (recorded in `adapter_config.json`), whose embeddings are first grown to the
extended vocabulary exactly as training grew them (a QLoRA adapter's NF4 base dequantized), and then merged into
it, so the caller gets one plain model.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from align3gr.errors import ConfigError
from align3gr.models import DTYPES
from align3gr.models.embeddings import resize_embeddings
from align3gr.models.zero3 import loading_whole
from align3gr.stage_output import META_FILE

ADAPTER_CONFIG = "adapter_config.json"


def resolve_dtype(dtype: str | torch.dtype):
    """A torch dtype (or "auto") from its name, or a ConfigError naming the accepted names."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    return dtype if dtype == "auto" else getattr(torch, dtype)


def _quantization(load_in_4bit: bool, dtype) -> dict:
    """The `from_pretrained` arguments of QLoRA's base: NF4 weights with double quantization, computed in `dtype`
    and stored in it too (`bnb_4bit_quant_storage`), so FSDP sees one dtype when it flattens the parameters."""
    if not load_in_4bit:
        return {}
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("load_in_4bit=True needs bitsandbytes: pip install 'align3gr[qlora]'")
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if dtype == "auto" else dtype
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=compute,
    )
    return {"quantization_config": config}


TRUST_HINT = (
    "its code runs only with trust_remote_code: true in the sections of the stages that load it (sft, evaluate, "
    "dpo; the pipeline passes sft's on), or recommend --trust-remote-code"
)


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The tokenizer at `path`; without a pad token it pads with EOS (as TRL does)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pad_token_id(tokenizer) -> int:
    """The token that pads batches: the tokenizer's pad token, or EOS for one without (as `load_tokenizer` sets)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def load_model_and_tokenizer(
    path: str | Path,
    *,
    dtype: str | torch.dtype = "float32",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
    device_map: str | dict | None = None,
):
    """(model, tokenizer) of a causal LM folder or Hub id, for training. `load_in_4bit` gives QLoRA's NF4 base."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        hint = "" if trust_remote_code or "custom code" not in str(err) else f" ({TRUST_HINT})"
        raise ConfigError(f"model={str(path)!r}: cannot load a model config: {err}{hint}") from None
    kwargs = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code, **_quantization(load_in_4bit, torch_dtype)}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), config=config, **kwargs)
    except ValueError as err:
        raise ConfigError(f"model={str(path)!r}: not a causal LM this transformers can load: {err}") from None
    if load_in_4bit:
        keep_nf4_trainable(model)
    return model, load_tokenizer(path, trust_remote_code)


def keep_nf4_trainable(model) -> None:
    """Keep every NF4 layer in bitsandbytes' training layout. On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit
    weight for its inference kernel the first time the layer runs in eval mode, and the repacked layer can no longer
    train (and fails on inputs narrower than its 64-value blocks); the SFT probe evaluates between training steps."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_for_inference(path: str | Path, dtype: str | torch.dtype = "float32", trust_remote_code: bool = False):
    """(model, tokenizer) of a model folder or a stage output folder (`sft/`, `dpo/STAGE/`), model in eval mode and
    whole even in a process training under ZeRO-3; an adapter is merged into its base model (`load_adapter`).
    `trust_remote_code` runs model code shipped with the checkpoint (or its base), as SFT's option of that name."""
    folder = Path(path)
    if folder.is_dir() and not any((folder / name).is_file() for name in ("config.json", ADAPTER_CONFIG)):
        raise ConfigError(
            f"{folder}: no model (config.json or {ADAPTER_CONFIG}); expected a model folder, a run's sft/ or "
            "dpo/STAGE/, or a folder written by `align3gr push`"
        )
    tokenizer = load_tokenizer(folder, trust_remote_code)
    with loading_whole():
        if not (folder / ADAPTER_CONFIG).is_file():
            model, _ = load_model_and_tokenizer(folder, dtype=dtype, trust_remote_code=trust_remote_code)
            return model.eval(), tokenizer
        return load_adapter(folder, dtype, trust_remote_code=trust_remote_code).merge_and_unload().eval(), tokenizer


def adapter_base(folder: Path, recorded: str) -> str:
    """The base model of the adapter in `folder`: as recorded (PEFT records a local folder by its absolute path),
    unless that folder is gone and one of its name is in `folder` or a parent of it: a run folder moved with the base
    built beside its SFT output (the tiny model's `sft_base/`)."""
    path = Path(recorded)
    if not path.is_absolute() or path.exists():
        return recorded
    here = folder.resolve()
    return next((str(p / path.name) for p in (here, *here.parents) if (p / path.name).is_dir()), recorded)


def load_adapter(
    folder: Path,
    dtype: str | torch.dtype = "float32",
    trainable: bool = False,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
):
    """The `PeftModel` of an adapter output folder: its base model (recorded in `adapter_config.json`), embeddings
    grown to the saved tokenizer's size with `resize_embeddings` (rows past the base vocabulary set to the mean, as
    in training; `meta.json` records the base vocabulary size), then the adapter, trainable or not.

    A QLoRA adapter (`load_in_4bit` in the config `meta.json` records) gets its base in NF4 again, quantized from the
    dtype it was trained in (NF4 codes depend on it); for inference that base is then dequantized and cast to `dtype`,
    so a merge adds the adapter to the NF4 weights it was trained on.
    """
    from peft import PeftModel

    adapter = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ConfigError(f"{folder}: adapter folder without {META_FILE} (base vocabulary size unknown)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    vocabulary, quantized = meta["vocabulary"], meta.get("config", {}).get("load_in_4bit", False)
    quantized_from = meta["config"].get("dtype", "float32") if quantized else dtype
    base_model = adapter_base(folder, adapter["base_model_name_or_path"])
    base, _ = load_model_and_tokenizer(
        base_model,
        dtype=quantized_from,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        load_in_4bit=quantized,
    )
    if quantized and not trainable:
        base = base.dequantize()
        if resolve_dtype(dtype) != "auto":  # "auto": the dtype it was quantized from, as the checkpoint's
            base = base.to(resolve_dtype(dtype))
    resize_embeddings(base, vocabulary["embedding_rows"], vocabulary["base_vocab_size"], 1)
    return PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)
