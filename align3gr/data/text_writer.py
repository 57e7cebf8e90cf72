"""Task texts written by a local causal LM (`text_generator: llm`), offline, batched and cached.

Each text's facts (the same ones the templates use) become an instruction from `prompts/data_texts.yaml`;
outputs are appended to a JSONL cache per model (flushed per batch, so a killed run keeps what it wrote and a
re-run generates only what is missing). Empty outputs fall back to the template text.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from align3gr.data.config import DataConfig
from align3gr.io import cache_root
from align3gr.models.local import model_identity, require_model_folder
from align3gr.prompts import load_prompts, pick

log = logging.getLogger(__name__)
INSTRUCTION_KINDS = {f"llm_{kind}": ("facts",) for kind in ("profile", "intention", "preference")}


@dataclass
class TextRequest:
    """One text to write: its kind, the facts it is made from, and the template rendering."""

    kind: str
    key: str
    facts: dict[str, str]
    template: str = field(default="")


class Instructions:
    """The prompt that asks the LLM for one text: an `llm_KIND` paraphrase of `prompts/data_texts.yaml` (or of
    another prompt file holding `kinds`) given the request's facts (the same facts its template is filled with)."""

    def __init__(
        self, seed: int, prompts: str = "data_texts", kinds: Mapping[str, Collection[str]] = INSTRUCTION_KINDS
    ) -> None:
        self.seed = seed
        self.templates = load_prompts(prompts, kinds)

    def __call__(self, request: TextRequest) -> str:
        facts = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in request.facts.items() if v)
        return pick(self.templates[f"llm_{request.kind}"], self.seed, request.kind, request.key).format(facts=facts)


class LLMTextWriter:
    """Greedy generation with a local Hugging Face causal LM, cached on disk by model and prompt."""

    def __init__(self, config: DataConfig, batch_size: int = 16, prompt: Instructions | None = None) -> None:
        self.folder = require_model_folder(config.text_model or "", "text_model")
        self.max_new_tokens = config.text_max_new_tokens
        self.batch_size = batch_size
        self.identity = model_identity(self.folder)
        self.cache_path = Path(config.text_cache or cache_root() / "texts") / f"{self.identity}.jsonl"
        self.prompt = prompt or Instructions(config.seed)

    def key(self, prompt: str) -> str:
        """Cache key: the model's identity, the generation settings (greedy, length limit) and the prompt."""
        return hashlib.sha256(f"{self.identity}\n{self.max_new_tokens}\n{prompt}".encode()).hexdigest()

    @functools.cached_property
    def cache(self) -> dict[str, str]:
        """Texts written by earlier runs with this model, read once; `generate` adds to it."""
        cached: dict[str, str] = {}
        if self.cache_path.is_file():
            with open(self.cache_path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a kill; its text is generated again
                    cached[row["key"]] = row["text"]
        return cached

    def write(self, requests: Sequence[TextRequest]) -> list[str]:
        """One text per request, in order."""
        prompts = [self.prompt(r) for r in requests]
        keys = [self.key(p) for p in prompts]
        todo = {k: p for k, p in zip(keys, prompts, strict=True) if k not in self.cache}
        log.info(
            "LLM texts: %d requested, %d cached, %d to generate", len(prompts), len(prompts) - len(todo), len(todo)
        )
        if todo:
            self.generate(sorted(todo.items(), key=lambda kv: (len(kv[1]), kv[0])))
        texts = [self.cache[k] or r.template for k, r in zip(keys, requests, strict=True)]
        empty = sum(1 for k in keys if not self.cache[k])
        if empty:
            log.warning("LLM texts: %d empty outputs replaced by the template text", empty)
        return texts

    @functools.cached_property
    def model(self):
        """(model, tokenizer), loaded on first use only: a fully cached run never loads the model."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True).eval(), tokenizer

    def generate(self, todo: list[tuple[str, str]]) -> None:
        """Write the text of each (key, prompt) into the cache file and `self.cache`, flushed per batch; prompts
        come sorted by length, so a batch holds little padding."""
        import torch
        from transformers import GenerationConfig

        with torch.no_grad():
            model, tokenizer = self.model
            settings = GenerationConfig(
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as handle:
                for start in tqdm(range(0, len(todo), self.batch_size), desc="writing texts", unit="batch"):
                    chunk = todo[start : start + self.batch_size]
                    inputs = tokenizer(
                        [self.render(tokenizer, p) for _, p in chunk],
                        return_tensors="pt",
                        padding=True,
                        add_special_tokens=not tokenizer.chat_template,  # a chat template already holds any BOS
                    )
                    generated = model.generate(**inputs, generation_config=settings)
                    new_tokens = generated[:, inputs["input_ids"].shape[1] :]
                    for (key, _), text in zip(
                        chunk, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True
                    ):
                        self.cache[key] = " ".join(text.split())
                        handle.write(json.dumps({"key": key, "text": self.cache[key]}, ensure_ascii=False) + "\n")
                    handle.flush()

    @staticmethod
    def render(tokenizer, prompt: str) -> str:
        """Through the tokenizer's chat template when it has one, plain text otherwise."""
        if tokenizer.chat_template:
            messages = [{"role": "user", "content": prompt}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt + "\n"
