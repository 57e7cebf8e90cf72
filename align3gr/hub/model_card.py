"""The model card (`README.md`) of a published stage, written from the files of the published folder alone.

The metadata is a `huggingface_hub.ModelCardData`: license (the base model's) and the data's `datasets`, the base
model when it is a Hub id, library, `pipeline_tag: text-generation` with `inference: false` (the model answers in
SCID tokens, which a Hub widget would print raw), tags (align3gr's and those of the stage's TRL trainer), and a
model-index with the stage's test Recall@K and NDCG@K and their protocol. The body: what the model is and its base
model, the data statistics, license and data terms, the SCID format and tokenizer report, the test metrics of every
evaluated stage of the run, how to load it and recommend, the training configuration, the framework versions and
trainer TRL's own card records, and the citations.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from huggingface_hub import ModelCard, ModelCardData

from align3gr.console import format_value, markdown_table
from align3gr.hub.dataset_terms import DatasetTerms, dataset_terms
from align3gr.hub.eval_results import RANKING_METRIC, decoding_text, eval_results, protocol_text
from align3gr.hub.item_titles import ITEM_TITLES
from align3gr.hub.settings import InferenceSettings
from align3gr.io import read_json
from align3gr.scid.code_tables import ITEM_CODES, USER_CODES, load_code_tables
from align3gr.stage_output import META_FILE
from align3gr.training_curves import CURVES_FILE

TAGS = ["align3gr", "generative-recommendation", "recommendation", "semantic-ids"]
DATA_STATISTICS = ("users", "items", "interactions", "density", "avg_sequence_length", "train_examples")
FILE_ROLES = {
    ITEM_CODES: "item ID -> SCID tokens",
    USER_CODES: "user ID -> SCID tokens (empty for item-only SCIDs)",
    "tokenizer_report.json": "the SCID tokenizer's report (codebook usage, collisions, U2I AUC)",
    "code_usage.png": "how many items (users) each code holds, per level",
    CURVES_FILE: "this stage's training and valid losses and valid ranking metrics against steps",
    "metrics.json": "test metrics of every evaluated stage of the run",
    "align3gr.json": "prompt template, beam width and history length `load_recommender` uses",
    ITEM_TITLES: "item ID -> title, for `align3gr recommend`",
    META_FILE: "stage, base model, license, vocabulary sizes, training configuration, framework versions",
}
UNKNOWN_LICENSE = {"license": "unknown", "source": "not recorded"}
ALIGN3GR_CITATION = """@misc{ye2025align3gr,
  title         = {{Align3GR: Unified Multi-Level Alignment for LLM-based Generative Recommendation}},
  author        = {Ye, Wencai and Sun, Mingjie and Chen, Shuhang and Wu, Wenjin and Jiang, Peng},
  year          = {2025},
  eprint        = {2511.11255},
  archivePrefix = {arXiv}
}"""
TRL_CITATION = """@software{vonwerra2020trl,
  title  = {{TRL: Transformers Reinforcement Learning}},
  author = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, Tristan
            and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallouédec, Quentin},
  url    = {https://github.com/huggingface/trl},
  year   = {2020}
}"""


def card_data(meta: dict, metrics: dict[str, dict], stage: str | None, model_name: str) -> ModelCardData:
    """The Hub metadata of the card; the model-index holds this stage's test metrics (none when not evaluated)."""
    dataset = dataset_terms(meta.get("data", {}))
    license = meta.get("license") or UNKNOWN_LICENSE
    trainer_tags = meta.get("trainer", {}).get("tags", [])
    tags = [*TAGS, *trainer_tags, *(["peft"] if meta["adapter"] else [])]
    if meta.get("config", {}).get("use_lora"):
        tags.append("lora")
    results = eval_results(metrics[stage], dataset) if stage in metrics else []
    return ModelCardData(
        base_model=meta["base_model"] or None,
        datasets=[dataset.id],
        library_name="peft" if meta["adapter"] else "transformers",
        license=license["license"],
        license_name=license.get("license_name"),
        license_link=license.get("license_link"),
        pipeline_tag="text-generation",
        tags=tags,
        model_name=model_name,
        eval_results=results or None,
        inference=False,
    )


def base_section(meta: dict) -> str:
    """What the weights are (full fine-tune, adapter, merged adapter) and on which base, with the vocabulary sizes."""
    config, vocabulary = meta.get("config", {}), meta.get("vocabulary") or {}
    if meta["base_model"]:
        base = f"[`{meta['base_model']}`](https://huggingface.co/{meta['base_model']})"
    elif config.get("model") == "tiny":
        base = "the embedded tiny Qwen2 of align3gr (built from config, tokenizer trained on the dataset's text)"
    else:
        base = f"a local model folder (`{Path(str(config.get('model', '?'))).name}`), not on the Hub"
    if meta["merged_adapter"]:
        kind = f"A LoRA adapter on {base}, merged into it and published as a full model (that base is not on the Hub)."
    elif meta["adapter"]:
        kind = f"A LoRA adapter (with the trained SCID embedding rows) on {base}; loading fetches the base."
    else:
        kind = f"A full fine-tune of {base}."
    sizes = (
        f" The vocabulary adds {vocabulary['scid_tokens']} SCID tokens to the base's {vocabulary['base_vocab_size']}"
        f" (embedding rows: {vocabulary['embedding_rows']})."
        if vocabulary
        else ""
    )
    return f"## Base model\n\n{kind}{sizes}"


def data_section(data: dict, dataset: DatasetTerms) -> str:
    """The dataset, its builder, filters, split and statistics (from the run's data/meta.json)."""
    statistics = data.get("statistics", {})
    rows = [[name, statistics[name]] for name in DATA_STATISTICS if name in statistics]
    builder = data.get("builder", {})
    filters = data.get("filters", {})
    lines = [
        "## Data",
        "",
        f"{dataset.name}, built by the `{builder.get('name', '?')}` builder; k-core filter: users >="
        f" {filters.get('user_k', '?')}, items >= {filters.get('item_k', '?')} interactions; leave-one-out split"
        " (train `items[:-2]`, valid `items[-2]`, test `items[-1]`); histories cut to the last"
        f" {data.get('max_history', '?')} items.",
        "",
        markdown_table(["statistic", "value"], rows),
    ]
    return "\n".join(lines)


def license_section(meta: dict, dataset: DatasetTerms) -> str:
    """The model's license (the base model's, and where it was found) and the terms of the training data."""
    license = meta.get("license") or UNKNOWN_LICENSE
    named = f"`{license['license']}`"
    if license.get("license_name"):
        link = f", [text]({license['license_link']})" if license.get("license_link") else ""
        named += f" (`{license['license_name']}`{link})"
    if license["license"] == "unknown":
        model = f"License: {named}: {license.get('source', '')}. State the base model's license before sharing."
    else:
        model = f"License: {named}, the base model's, which the weights derive from (source: {license['source']})."
    data = f"[{dataset.name}]({dataset.link})" if dataset.link else dataset.name
    held = (
        f" and the items' titles (`{ITEM_TITLES}`), not the rest of the data"
        if meta.get("item_titles")
        else ", not the data"
    )
    return (
        f"## License and data terms\n\n{model}\n\nTrained and evaluated on {data} (`{dataset.id}`): {dataset.terms}"
        f" The published files hold the dataset's item and user IDs and their codes{held}; its terms bind whoever"
        " obtains it."
    )


def scid_section(
    folder: Path, items: dict[str, list[str]], users: dict[str, list[str]], settings: InferenceSettings
) -> str:
    """The code format with an example, the tokenizer report's per-level usage, and the prompt."""
    item_id, codes = next(iter(items.items()))
    levels = list(zip(*items.values(), strict=True))
    sizes = ", ".join(f"{len(set(level))}" for level in levels)
    lines = [
        "## SCID format",
        "",
        f"Every item is {len(codes)} added tokens, one per level (distinct codes used per level: {sizes}), written"
        f" with no separator: item `{item_id}` is `{''.join(codes)}`.",
    ]
    if users:
        user_id, user = next(iter(users.items()))
        lines[-1] += f" Users have their own prefixes: user `{user_id}` is `{''.join(user)}`."
    report = read_json(folder / "tokenizer_report.json")
    level_rows = [
        [level.get("level"), level.get("codebook_size"), level.get("utilisation"), level.get("perplexity")]
        for level in report.get("items", {}).get("levels", [])
    ]
    if level_rows:
        lines += ["", "Item tokenizer (`tokenizer_report.json`; the raw codes, before de-duplication):", ""]
        lines.append(markdown_table(["level", "codebook size", "utilisation", "perplexity"], level_rows))
    collisions = report.get("items", {}).get("collisions", {})
    if "collision_rate_after" in collisions:
        before, after = (format_value(collisions.get(f"collision_rate_{t}", "?")) for t in ("before", "after"))
        lines += ["", f"Item collision rate: {before} before de-duplication, {after} after."]
    if (folder / "code_usage.png").is_file():
        lines += ["", "![How many items each code holds, per level](code_usage.png)"]
    user_part = "user <SCID>" if settings.with_user_scid else "the user"
    lines += [
        "",
        "Recommendation prompt (the sequential task of SFT, as evaluated; `{user}` is "
        f"`{user_part}` for known users{', `the user` otherwise' if settings.with_user_scid else ''}):",
        "",
        f"> {settings.seq_template}",
        "",
        "The answer is one item SCID, decoded over the item trie: "
        + decoding_text(settings.decoder, f"max(k, {settings.beam_size})")
        + ".",
    ]
    return "\n".join(lines)


def metric_columns(metrics: dict[str, dict]) -> list[str]:
    """The metrics table's columns: Recall and NDCG at every K the evaluations hold, coverage at the largest K, the
    share of valid answers."""
    ks = sorted({int(match.group(2)) for m in metrics.values() for key in m if (match := RANKING_METRIC.match(key))})
    coverage = [f"coverage@{ks[-1]}"] if ks else []
    return [f"{name}@{k}" for name in ("recall", "ndcg") for k in ks] + coverage + ["valid_rate"]


def metrics_section(metrics: dict[str, dict], stage: str | None, meta: dict) -> str:
    """The test metrics of every evaluated stage of the run, this model's row in bold, their protocol, and the dtype
    they were measured in when the published weights were cast to another."""
    if not metrics:
        return "## Test metrics\n\nNo stage of the run was evaluated on the test split."
    columns = [c for c in metric_columns(metrics) if any(c in m for m in metrics.values())]
    rows = [
        [f"**{name}** (this model)" if name == stage else name, *(m.get(c, "") for c in columns), m.get("num_users")]
        for name, m in metrics.items()
    ]
    note = "" if stage in metrics else f"\n\nThis stage (`{stage}`) was not evaluated on the test split."
    weights, evaluated = meta.get("weights_dtype"), meta.get("evaluated_dtype")
    if weights and evaluated and weights != evaluated:
        note += (
            f"\n\nThese weights are saved in {weights}; the metrics above were measured in {evaluated}, before the"
            " cast, so this model's own ranked lists may differ a little from the evaluation's."
        )
    protocol = protocol_text(metrics.get(stage) or next(iter(metrics.values())))
    return f"## Test metrics\n\n{protocol}\n\n" + markdown_table(["stage", *columns, "users"], rows) + note


def usage_section(
    folder: Path, items: dict[str, list[str]], users: dict[str, list[str]], source: str, settings: InferenceSettings
) -> str:
    """Loading and recommending with `load_recommender`, with real item (and user) IDs of the model."""
    item_ids = list(items)[:3]
    user_ids = list(users)[:1] if settings.with_user_scid else []
    if (folder / "adapter_config.json").is_file():
        loading = (
            "The folder is a PEFT adapter whose SCID tokens lie past the base model's vocabulary, so"
            " `AutoModelForCausalLM` alone does not load it (the base comes up with its original vocabulary, which"
            " the adapter's trained token rows do not fit). `align3gr.load_recommender` does: `recommender.model` is"
            " the base with the adapter merged, an ordinary Transformers model, and `recommender.tokenizer` its"
            " tokenizer. By hand, with `peft` installed: load the base (quantized to NF4 by bitsandbytes, as in"
            " training, when `meta.json`'s `config` has `load_in_4bit`), grow its embeddings with"
            " `resize_token_embeddings(embedding_rows, mean_resizing=False)`, set every row from `base_vocab_size`"
            " on to the mean of the rows before it (input and untied output embeddings, as training did; both"
            " sizes are in `meta.json`'s `vocabulary`), then"
            f' `PeftModel.from_pretrained(base, "{source}")`; `AutoTokenizer` loads the tokenizer.'
        )
    else:
        loading = "The folder is also an ordinary Hugging Face model: `AutoModelForCausalLM` / `AutoTokenizer` load it."
    call = f"recommender.recommend({item_ids!r}, k=10, user_id="
    named = "".join(f"{call}{u!r})  # a known user, named by SCID\n" for u in user_ids)
    return f"""## Usage

With align3gr installed:

```python
import align3gr

recommender = align3gr.load_recommender("{source}")
recommender.recommend({item_ids!r}, k=10)  # item IDs, best first
{named}recommender.recommend_with_scores({item_ids!r}, k=5)  # (item ID, log-probability of its SCID)
recommender.rank([{item_ids[:2]!r}, {item_ids[1:]!r}], k=10)  # many users at once, decoded in batches
```

Histories are item IDs of `{ITEM_CODES}`, oldest first; an unknown item is an error, an unknown user is named
"the user". {loading} `align3gr evaluate --model <folder> --data <dataset> --out <eval_dir>` evaluates it."""


def config_section(meta: dict) -> str:
    """The stage's resolved training configuration, and the pipeline's when the run has one."""
    text = "## Training configuration\n\n```yaml\n" + yaml.safe_dump(meta.get("config", {}), sort_keys=False) + "```"
    if meta.get("pipeline_config"):
        pipeline = yaml.safe_dump(meta["pipeline_config"], sort_keys=False)
        text += f"\n\n<details><summary>Pipeline configuration</summary>\n\n```yaml\n{pipeline}```\n\n</details>"
    return text


def files_section(folder: Path) -> str:
    """What each align3gr file of the folder holds."""
    rows = [f"- `{name}`: {role}" for name, role in FILE_ROLES.items() if (folder / name).is_file()]
    return "## Files\n\nBesides the model and tokenizer files:\n\n" + "\n".join(rows)


def frameworks_section(folder: Path, meta: dict) -> str:
    """The stage's TRL trainer and the framework versions, as TRL's own model card records them, and the stage's
    training curves when published."""
    trainer = meta.get("trainer")
    lines = ["## Training procedure", ""]
    if trainer:
        lines += [f"Trained with TRL's {trainer['name']} trainer (align3gr's `{trainer['class']}`).", ""]
    rows = [[name, v["version"], v["recorded_by"]] for name, v in meta.get("frameworks", {}).items()]
    lines.append(markdown_table(["framework", "version", "recorded by"], rows) if rows else "Versions not recorded.")
    if (folder / CURVES_FILE).is_file():
        lines += ["", f"![Training and valid curves of this stage]({CURVES_FILE})"]
    return "\n".join(lines)


def citation_section(meta: dict) -> str:
    """BibTeX for Align3GR (title, authors, arXiv ID), the paper of the stage's trainer when TRL cites one, and TRL."""
    paper = meta.get("trainer", {}).get("paper", {})
    blocks = [("Align3GR, the method", ALIGN3GR_CITATION)]
    if paper.get("citation"):
        blocks.append((f"{paper.get('title', 'the trainer')} (the stage's trainer)", paper["citation"]))
    blocks.append(("TRL", TRL_CITATION))
    return "## Citations\n\n" + "\n\n".join(f"{what}:\n\n```bibtex\n{bibtex}\n```" for what, bibtex in blocks)


def model_card(folder: Path, settings: InferenceSettings, source: str) -> ModelCard:
    """The model card of the published `folder`; `source` is what to pass to `load_recommender` (repo id or path)."""
    meta = read_json(folder / META_FILE)
    metrics = read_json(folder / "metrics.json")
    items, users = load_code_tables(folder)
    dataset = dataset_terms(meta.get("data", {}))
    title = source.rstrip("/").rsplit("/", 1)[-1]
    intro = (
        f"# {title}\n\nA generative recommender trained with align3gr (Align3GR: SCID tokenization, multi-task SFT,"
        f" progressive preference alignment); this is stage `{settings.stage}`. Given a user's history as item IDs,"
        " it generates the SCIDs of the next items."
    )
    sections = [
        intro,
        base_section(meta),
        data_section(meta.get("data", {}), dataset),
        license_section(meta, dataset),
        scid_section(folder, items, users, settings),
        metrics_section(metrics, settings.stage, meta),
        usage_section(folder, items, users, source, settings),
        config_section(meta),
        files_section(folder),
        frameworks_section(folder, meta),
        citation_section(meta),
    ]
    data = card_data(meta, metrics, settings.stage, title)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
