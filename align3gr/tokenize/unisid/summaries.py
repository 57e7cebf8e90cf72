"""The texts of UniSID's input and objective: the instruction prompt (UniSID 3.1) and the item summaries the SID
and embedding reconstruct (UniSID 3.4, Eq. 7), written offline by a local causal LM when `summary_model` is given
(cached like the data stage's LLM texts), from a template otherwise (`prompts/unisid.yaml`). Eq. 7 summarises the
structured attributes x^att only: neither the LLM's facts nor the template hold the title.
"""

from __future__ import annotations

from align3gr.data.config import DataConfig
from align3gr.data.dataset import Dataset
from align3gr.data.schema import Item
from align3gr.data.text_writer import Instructions, LLMTextWriter, TextRequest
from align3gr.data.texts import TaskTexts, join_phrase
from align3gr.models.local import require_model_folder
from align3gr.prompts import load_prompts, pick
from align3gr.tokenize.unisid.config import UniSIDConfig

PROMPT_FILE = "unisid"
PROMPT_KINDS = {"instruction": (), "summary": ("categories", "details"), "llm_summary": ("facts",)}


def load_unisid_prompts() -> dict[str, list[str]]:
    """The checked entries of `prompts/unisid.yaml`."""
    return load_prompts(PROMPT_FILE, PROMPT_KINDS)


def attribute_lines(item: Item, image_attribute: str) -> list[tuple[str, str]]:
    """The structured attributes as (name, value): the category path, then every scalar attribute but the image."""
    lines = [("Category", " > ".join(item.categories))] if item.categories else []
    for key, value in item.attributes.items():
        if key != image_attribute and isinstance(value, str | int | float) and str(value).strip():
            lines.append((key.replace("_", " ").capitalize(), str(value).strip()))
    return lines


def summary_request(item: Item, templates: list[str], seed: int, image_attribute: str) -> TextRequest:
    """The item's attributes as the facts of Eq. 7 and its template summary."""
    facts = {name.lower(): value for name, value in attribute_lines(item, image_attribute)}
    template = pick(templates, seed, "summary", item.item_id)
    details = "".join(TaskTexts.item_details(item).values())
    text = template.format(categories=join_phrase(item.categories) or "An item", details=details)
    return TextRequest("summary", item.item_id, facts, text)


def write_summaries(dataset: Dataset, options: UniSIDConfig, seed: int) -> list[str]:
    """One summary per item of `dataset`, in its order: the LLM's when `options.summary_model` is set, else the
    template's."""
    templates = load_unisid_prompts()["summary"]
    requests = [summary_request(i, templates, seed, options.image_attribute) for i in dataset.items.values()]
    if options.summary_model is None:
        return [request.template for request in requests]
    folder = require_model_folder(options.summary_model, "unisid_options.summary_model")
    config = DataConfig(
        text_model=str(folder),
        text_cache=options.summary_cache,
        text_max_new_tokens=options.summary_max_new_tokens,
        seed=seed,
    )
    return LLMTextWriter(config, prompt=Instructions(seed, PROMPT_FILE, {"llm_summary": ("facts",)})).write(requests)
