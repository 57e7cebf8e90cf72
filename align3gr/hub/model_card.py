"""The model card (`README.md`) of a published stage, written from the files of the published folder alone.

Hub metadata in the YAML front matter (library, tags, the base model when it is a Hub id), then: what the model is
and its base model, the data statistics, the SCID format and tokenizer report, the test metrics of every evaluated
stage of the run, how to load it and recommend, and the training configuration.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from align3gr.console import format_value, markdown_table
from align3gr.hub.item_titles import ITEM_TITLES
from align3gr.hub.settings import InferenceSettings
from align3gr.io import read_json
from align3gr.scid.code_tables import ITEM_CODES, USER_CODES, load_code_tables
from align3gr.stage_output import META_FILE

TAGS = ["align3gr", "generative-recommendation", "recommendation", "semantic-ids"]
METRIC_COLUMNS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "coverage@10", "valid_rate")
DATA_STATISTICS = ("users", "items", "interactions", "density", "avg_sequence_length", "train_examples")
FILE_ROLES = {
    ITEM_CODES: "item ID -> SCID tokens",
    USER_CODES: "user ID -> SCID tokens (empty for item-only SCIDs)",
    "tokenizer_report.json": "the SCID tokenizer's report (codebook usage, collisions, U2I AUC)",
    "code_usage.png": "how many items (users) each code holds, per level",
    "metrics.json": "test metrics of every evaluated stage of the run",
    "align3gr.json": "prompt template, beam width and history length `load_recommender` uses",
    ITEM_TITLES: "item ID -> title, for `align3gr recommend`",
    META_FILE: "stage, base model, vocabulary sizes, training configuration",
}


def front_matter(meta: dict) -> str:
    """The YAML header the Hub reads: library, tags, and the base model when it is a Hub id."""
    header: dict = {"library_name": "peft" if meta["adapter"] else "transformers", "tags": TAGS}
    if meta["base_model"]:
        header["base_model"] = meta["base_model"]
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---"


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


def data_section(data: dict) -> str:
    """The dataset's builder, filters, split and statistics (from the run's data/meta.json)."""
    statistics = data.get("statistics", {})
    rows = [[name, statistics[name]] for name in DATA_STATISTICS if name in statistics]
    builder = data.get("builder", {})
    filters = data.get("filters", {})
    lines = [
        "## Data",
        "",
        f"Built by the `{builder.get('name', '?')}` builder; k-core filter: users >= {filters.get('user_k', '?')},"
        f" items >= {filters.get('item_k', '?')} interactions; leave-one-out split (train `items[:-2]`, valid"
        f" `items[-2]`, test `items[-1]`); histories cut to the last {data.get('max_history', '?')} items.",
        "",
        markdown_table(["statistic", "value"], rows),
    ]
    return "\n".join(lines)


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
        f"The answer is one item SCID, decoded by constrained beam search over the item trie (beam width"
        f" max(k, {settings.beam_size})).",
    ]
    return "\n".join(lines)


def metrics_section(metrics: dict[str, dict], stage: str | None) -> str:
    """The test metrics of every evaluated stage of the run, this model's row in bold."""
    if not metrics:
        return "## Test metrics\n\nNo stage of the run was evaluated on the test split."
    columns = [c for c in METRIC_COLUMNS if any(c in m for m in metrics.values())]
    rows = [
        [f"**{name}** (this model)" if name == stage else name, *(m.get(c, "") for c in columns), m.get("num_users")]
        for name, m in metrics.items()
    ]
    note = "" if stage in metrics else f"\n\nThis stage (`{stage}`) was not evaluated on the test split."
    first = next(iter(metrics.values()))
    return (
        f"## Test metrics\n\nEvery user's last item, ranked among all {first.get('catalogue_size', '?')} items"
        f" (beam width {first.get('beam_size', '?')}):\n\n" + markdown_table(["stage", *columns, "users"], rows) + note
    )


def usage_section(
    folder: Path, items: dict[str, list[str]], users: dict[str, list[str]], source: str, settings: InferenceSettings
) -> str:
    """Loading and recommending with `load_recommender`, with real item (and user) IDs of the model."""
    item_ids = list(items)[:3]
    user_ids = list(users)[:1] if settings.with_user_scid else []
    peft = " (with `peft` installed: it is an adapter)" if (folder / "adapter_config.json").is_file() else ""
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
"the user". The folder is also an ordinary Hugging Face model: `AutoModelForCausalLM` / `AutoTokenizer` load
it{peft}, and `align3gr evaluate --model <folder> --data <dataset>` evaluates it."""


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


def model_card(folder: Path, settings: InferenceSettings, source: str) -> str:
    """The README.md of the published `folder`; `source` is what to pass to `load_recommender` (repo id or path)."""
    meta = read_json(folder / META_FILE)
    items, users = load_code_tables(folder)
    title = source.rsplit("/", 1)[-1]
    intro = (
        f"# {title}\n\nA generative recommender trained with align3gr (Align3GR: SCID tokenization, multi-task SFT,"
        f" progressive preference alignment); this is stage `{settings.stage}`. Given a user's history as item IDs,"
        " it generates the SCIDs of the next items."
    )
    sections = [
        front_matter(meta),
        intro,
        base_section(meta),
        data_section(meta.get("data", {})),
        scid_section(folder, items, users, settings),
        metrics_section(read_json(folder / "metrics.json"), settings.stage),
        usage_section(folder, items, users, source, settings),
        config_section(meta),
        files_section(folder),
    ]
    return "\n\n".join(sections) + "\n"
