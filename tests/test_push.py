"""`align3gr push --to-folder` and `align3gr.load_recommender` on small runs (a full model and a LoRA adapter on a
local base): the published files and card (Hub metadata that passes the Hub's checks), identical recommendations to
the run's test predictions, the errors; the base model licenses and dataset terms the card states."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard, constants
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
from huggingface_hub.utils import validate_repo_id
from launching import free_port
from test_decode import build_scid_model, crafted_codes

import align3gr
from align3gr.cli import main
from align3gr.console import format_value
from align3gr.data.build import build_dataset
from align3gr.data.config import DataConfig
from align3gr.data.dataset import load_dataset
from align3gr.errors import ConfigError, DataError
from align3gr.evaluate.stage import run_evaluate
from align3gr.hub.base_license import TOOLKIT, License, base_license
from align3gr.hub.dataset_terms import dataset_terms
from align3gr.hub.push import PUSHED_FILES, check_existing_repo
from align3gr.io import read_json, write_json
from align3gr.models.loading import load_for_inference, load_model_and_tokenizer
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.scid.tokens import scid_tokens
from align3gr.scid.vocabulary import extend_vocabulary
from align3gr.seeding import seeded
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.lora import scid_lora_config
from align3gr.training_args import check_training_args
from align3gr.training_curves import CURVES_FILE, plot_training_curves

TRAINING_CONFIG = {"model": "tiny", "with_user_scid": True, "learning_rate": 0.001}
HUB_LICENSES = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
    cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
    cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
    cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0
    lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl
    openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
    fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 grok2-community gemma unknown
    other""".split()
)
"""The `license` values the Hub's metadata check accepts (https://huggingface.co/docs/hub/repositories-licenses)."""


def hub_conformant(readme: Path) -> ModelCard:
    """The model card at `readme`, after the offline part of `ModelCard.validate()` (which posts the card to the Hub's
    validate-yaml endpoint): the front matter is found by the Hub's own regex at the top and parses into
    `ModelCardData` (a model-index lacking a required field raises), the card data round-trips to the same YAML and
    text, the model-index round-trips through `EvalResult`s with every required field set, the license is a Hub
    identifier (`other` with a name), base model and datasets are valid repo ids, and the widget is off."""
    text = readme.read_text(encoding="utf-8")
    match = REGEX_YAML_BLOCK.search(text)
    assert match is not None and match.start() == 0
    header = yaml.safe_load(match.group(2))
    card = ModelCard.load(readme)
    assert card.data.to_dict() == header and str(card) == text
    if "model-index" in header:
        name, results = model_index_to_eval_results(header["model-index"])
        assert eval_results_to_model_index(name, results) == header["model-index"]
        for result in results:
            assert all((result.task_type, result.dataset_type, result.dataset_name, result.metric_type))
            assert isinstance(result.metric_value, float)
    assert header["license"] in HUB_LICENSES and (header["license"] != "other" or header["license_name"])
    for repo_id in [*header["datasets"], *([header["base_model"]] if "base_model" in header else [])]:
        validate_repo_id(repo_id)
    assert header["pipeline_tag"] == "text-generation" and header["inference"] is False
    assert header["library_name"] in ("transformers", "peft") and all(isinstance(t, str) for t in header["tags"])
    return card


def build_lora_model(data_dir: Path, folder: Path) -> Path:
    """An `sft/`-like LoRA output on a local tiny base (`sft_base/` beside it): the adapter's LoRA weights and the
    SCID rows it trains set at random, so the merged model ranks items; tokenizer, code tables, meta.json."""
    from peft import get_peft_model

    dataset = load_dataset(data_dir)
    items, users = crafted_codes(list(dataset.items), ""), crafted_codes(list(dataset.sequences), "u")
    texts = [item.title for item in dataset.items.values()] + ["The user has interacted with these items"] * 20
    base = build_tiny_causal_lm(texts, folder.parent / "sft_base", vocab_size=600, seed=1)
    model, tokenizer = load_model_and_tokenizer(base)
    known = len(tokenizer)
    new_ids = extend_vocabulary(model, tokenizer, scid_tokens(items, users))
    rows = model.get_input_embeddings().weight.shape[0]
    model = get_peft_model(model, scid_lora_config(model, new_ids, 4, 8, 0.0, ["q_proj", "v_proj"]))
    with torch.no_grad(), seeded(1) as generator:
        for parameter in (p for p in model.parameters() if p.requires_grad):
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(folder / "item_codes.json", items)
    write_json(folder / "user_codes.json", users)
    vocabulary = {"base_vocab_size": known, "embedding_rows": rows, "scid_tokens": len(new_ids)}
    config = {**TRAINING_CONFIG, "use_lora": True}
    write_json(folder / "meta.json", {"base_model": str(base.resolve()), "adapter": True, "vocabulary": vocabulary,
                                      "config": config, "align3gr_version": align3gr.__version__})  # fmt: skip
    return folder


def build_run(data_dir: Path, run: Path, build_model) -> Path:
    """A run folder as the pipeline lays it out: data/, scid/ (code tables, report), sft/ (with run bookkeeping
    files push must leave out), config.yaml, and a real test-split evaluation in eval/test/sft/."""
    shutil.copytree(data_dir, run / "data")
    sft = build_model(run / "data", run / "sft")
    if not (sft / "meta.json").is_file():
        base = {"base_model": str((run / "sft-base").resolve()), "adapter": False, "vocabulary": None}
        write_json(sft / "meta.json", {**base, "config": TRAINING_CONFIG, "align3gr_version": align3gr.__version__})
    history = [{"loss": 2.0, "step": 1}, {"loss": 1.0, "eval_valid_recall@10": 0.1, "step": 2}]
    (sft / "training_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
    plot_training_curves(history, sft / CURVES_FILE, "sft")
    (sft / "training_args.bin").write_bytes(b"pickle")
    (run / "scid").mkdir()
    for name in ("item_codes.json", "user_codes.json"):
        shutil.copy(sft / name, run / "scid" / name)
    levels = [{"level": k, "codebook_size": 8, "utilisation": 1.0, "perplexity": 7.5} for k in range(3)]
    collisions = {"collision_rate_before": 0.125, "collision_rate_after": 0.0}
    write_json(run / "scid" / "report.json", {"items": {"levels": levels, "collisions": collisions}})
    source = {"builder": "movielens", "source": str(data_dir.resolve())}  # a local folder, as a pipeline run's
    (run / "config.yaml").write_text(yaml.safe_dump({"source": source, "sft": TRAINING_CONFIG}))
    run_evaluate(sft, run / "data", run / "eval" / "test" / "sft")
    return run


def predictions(run: Path, stage: str = "sft") -> list[dict]:
    lines = (run / "eval" / "test" / stage / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def histories_before_test(run: Path) -> dict[str, list[str]]:
    """Each test user's whole history before the test target (longer than max_history for many users)."""
    return {user_id: seq.items[:-1] for user_id, seq in load_dataset(run / "data").sequences.items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 40-user slice of MovieLens-100K (`max_users`), small enough for two evaluated runs."""
    out = tmp_path_factory.mktemp("push_data") / "data"
    build_dataset("movielens", "recbole", out, DataConfig(max_users=40))
    return out


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """The full-model run, with a second evaluated stage (dpo/sp_easy: a copy of sft with its own metrics)."""
    run = build_run(data, tmp_path_factory.mktemp("push") / "run", build_scid_model)
    shutil.copytree(run / "sft", run / "dpo" / "sp_easy")
    metrics = read_json(run / "eval" / "test" / "sft" / "metrics.json")
    (run / "eval" / "test" / "sp_easy").mkdir()
    write_json(run / "eval" / "test" / "sp_easy" / "metrics.json", {**metrics, "recall@10": 0.5, "ndcg@10": 0.25})
    return run


@pytest.fixture(scope="module")
def published(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("published") / "ml100k-sft"
    argv = ["push", "--run", str(run), "--stage", "sft", "--to-folder", str(out), "--repo-id", "me/ml100k-sft"]
    assert main(argv) == 0
    return out


def test_published_files(published, run):
    names = {p.name for p in published.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "item_codes.json", "user_codes.json",
            "tokenizer_report.json", "metrics.json", "align3gr.json", "meta.json", "README.md"} <= names  # fmt: skip
    assert not names & {"training_log.jsonl", "training_args.bin", "adapter_config.json", "item_titles.json"}
    assert not any(p.name.startswith(".") for p in published.parent.iterdir())  # no temporary folder left
    for name in ("item_codes.json", "user_codes.json", "model.safetensors"):
        assert (published / name).read_bytes() == (run / "sft" / name).read_bytes()
    assert read_json(published / "tokenizer_report.json") == read_json(run / "scid" / "report.json")
    local = (str(run.parent.parent), sys.prefix, str(Path.home()))  # the test session's, the install's, the home
    for path in published.iterdir():
        if path.suffix in (".json", ".md"):
            assert not any(folder in path.read_text() for folder in local), path.name
    assert read_json(published / "meta.json")["pipeline_config"]["source"]["source"] == "data"
    sources = read_json(published / "meta.json")["data"]["sources"]
    assert [source["file"] for source in sources] == [
        Path(source["file"]).name for source in read_json(run / "data" / "meta.json")["sources"]
    ]
    metrics = read_json(published / "metrics.json")
    assert list(metrics) == ["sft", "sp_easy"] and "model" not in metrics["sft"]
    assert metrics["sft"]["recall@10"] == read_json(run / "eval" / "test" / "sft" / "metrics.json")["recall@10"]
    meta = read_json(published / "meta.json")
    assert meta["stage"] == "sft" and meta["base_model"] is None and not meta["adapter"] and not meta["merged_adapter"]
    assert meta["data"]["statistics"]["users"] == 40 and meta["pipeline_config"]["sft"] == TRAINING_CONFIG
    settings = read_json(published / "align3gr.json")
    assert settings["stage"] == "sft" and settings["with_user_scid"] and settings["beam_size"] == 20
    assert settings["max_history"] == 20 and "{history}" in settings["seq_template"]
    assert settings["dtype"] == read_json(run / "eval" / "test" / "sft" / "metrics.json")["config"]["dtype"]


def test_titles_are_published_only_when_asked(published, run, tmp_path):
    """Titles are the dataset's content: without `--with-titles` the card says the data is not published; with it,
    `item_titles.json` holds the catalogue's titles (for `align3gr recommend`) and the card says so."""
    assert "their codes, not the data; its terms bind" in (published / "README.md").read_text()
    out = tmp_path / "with-titles"
    assert main(["push", "--run", str(run), "--stage", "sft", "--to-folder", str(out), "--with-titles"]) == 0
    items = load_dataset(run / "data").items
    titles = {item_id: items[item_id].title for item_id in read_json(run / "scid" / "item_codes.json")}
    assert read_json(out / "item_titles.json") == titles and read_json(out / "meta.json")["item_titles"]
    assert "and the items' titles (`item_titles.json`), not the rest of the data" in (out / "README.md").read_text()


def test_published_files_show_no_secret_and_no_local_folder(run, tmp_path):
    """A token in a stage's recorded config (a run made before configs refused one) and local folders inside strings
    (a base model's card) are not published; a config refuses the Hub token outright."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("dpo", "*.safetensors"))
    shutil.copy2(run / "sft" / "model.safetensors", copy / "sft" / "model.safetensors")
    meta = read_json(copy / "sft" / "meta.json")
    meta["config"]["training_args"] = {"hub_token": "hf_" + "x" * 34, "pad_to_multiple_of": 8}
    meta["config"]["note"] = f"from the card of {tmp_path}/bases/MyBase/README.md, token hf_{'y' * 34}"
    write_json(copy / "sft" / "meta.json", meta)
    out = tmp_path / "out"
    assert main(["push", "--run", str(copy), "--stage", "sft", "--to-folder", str(out), "--repo-id", "me/m"]) == 0
    for path in out.iterdir():
        if path.suffix in (".json", ".md"):
            text = path.read_text()
            assert "hf_xxx" not in text and "hf_yyy" not in text and str(tmp_path) not in text, path.name
    published = read_json(out / "meta.json")["config"]
    assert published["training_args"] == {"hub_token": "<redacted>", "pad_to_multiple_of": 8}
    assert published["note"] == "from the card of README.md, token <redacted>"
    with pytest.raises(ConfigError, match="'hub_token' is not taken from a config"):
        check_training_args(SFTStageConfig, {"hub_token": "hf_" + "x" * 34}, "sft.training_args")


def test_hub_targets_are_checked_before_an_upload(run, capsys):
    """A malformed repo id is refused before anything is written; an existing repo that is not an earlier push's, or
    a public one under `--private`, is refused (the upload would delete its files / keep it public); `--dtype` without
    an adapter to merge is refused."""
    assert main(["push", "--run", str(run), "--stage", "sft", "--repo-id", "me/align3gr/ml100k"]) == 2
    assert "--repo-id 'me/align3gr/ml100k': Repo id must" in capsys.readouterr().err
    check_existing_repo("me/new", [".gitattributes"], is_private=False, private=False)
    check_existing_repo("me/earlier", [".gitattributes", "README.md", "align3gr.json", "x"], False, False)
    with pytest.raises(ConfigError, match="exists and is not an earlier `align3gr push`"):
        check_existing_repo("me/other", [".gitattributes", "model.safetensors"], is_private=True, private=False)
    with pytest.raises(ConfigError, match="exists and is public; --private does not change"):
        check_existing_repo("me/earlier", ["align3gr.json"], is_private=False, private=True)
    argv = ["push", "--run", str(run), "--stage", "sft", "--to-folder", "unused", "--dtype", "bfloat16"]
    assert main(argv) == 2
    assert "--dtype bfloat16: applies to a LoRA adapter merged into its local base" in capsys.readouterr().err
    assert not Path("unused").exists()


def test_model_card(published, run):
    text = (published / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    header = yaml.safe_load(front)
    assert header["library_name"] == "transformers" and "align3gr" in header["tags"] and "base_model" not in header
    table = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
             for line in body.splitlines() if line.startswith("| ")}  # fmt: skip
    columns = table["stage"]
    assert [name for name in table if "this model" in name or "*" in name] == ["**sft** (this model)"]
    assert "decoded over the item trie: SCID-constrained beam search, beam width max(k, 20)." in body
    assert "sp_easy" in table  # another stage of the run: listed, not marked
    for stage, name in (("sft", "**sft** (this model)"), ("sp_easy", "sp_easy")):
        metrics = read_json(run / "eval" / "test" / stage / "metrics.json")
        cells = table[name]
        for column, value in zip(columns[1:-1], cells[1:-1], strict=True):
            assert value == format_value(metrics[column]), (stage, column)
        assert cells[-1] == str(metrics["num_users"])
    assert 'align3gr.load_recommender("me/ml100k-sft")' in body
    assert "## Data" in body and "| users | 40 |" in body
    assert "## SCID format" in body and "embedded tiny Qwen2" in body and "learning_rate: 0.001" in body
    assert (published / "training_curves.png").read_bytes() == (run / "sft" / "training_curves.png").read_bytes()
    assert "- `training_curves.png`: this stage's training and valid losses" in body
    assert "![Training and valid curves of this stage](training_curves.png)" in body


def test_model_card_metadata(published, run):
    """The acceptance: the card passes the offline Hub checks; its model-index holds the test metrics of
    metrics.json with their protocol; license, datasets, library, tags; TRL's framework versions and citations."""
    card = hub_conformant(published / "README.md")
    data = card.data
    assert data.license == "apache-2.0" and data.datasets == ["movielens-100k"] and data.base_model is None
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation" and not data["inference"]
    assert {"align3gr", "generative-recommendation", "trl", "sft"} <= set(data.tags) and "peft" not in data.tags
    metrics = read_json(run / "eval" / "test" / "sft" / "metrics.json")
    assert data.model_name == "ml100k-sft"
    values = {result.metric_type: result.metric_value for result in data.eval_results}
    assert values == {f"{name}_at_{k}": metrics[f"{name}@{k}"] for name in ("recall", "ndcg") for k in (5, 10)}
    protocol = {
        "protocol": "leave-one-out", "target": "each user's last item", "users": metrics["num_users"],
        "candidates": "full catalogue", "catalogue_size": metrics["catalogue_size"],
        "decoder": "SCID-constrained beam search", "beam_size": metrics["beam_size"],
        "history_excluded": metrics["exclude_history"],
    }  # fmt: skip
    for result in data.eval_results:
        assert (result.task_type, result.dataset_type, result.dataset_name) == (
            "sequential-recommendation", "movielens-100k", "MovieLens-100K"
        )  # fmt: skip
        assert result.dataset_split == "test" and result.dataset_args == protocol
        assert result.metric_args == {"k": int(result.metric_type.rsplit("_", 1)[1])}
    body = card.text
    assert "## License and data terms" in body and "GroupLens Research's usage license" in body
    assert "excluded from the ranking" in body and f"ranked among all {metrics['catalogue_size']} items" in body
    meta = read_json(published / "meta.json")
    assert meta["trainer"]["class"] == "SCIDSFTTrainer" and meta["license"]["license"] == "apache-2.0"
    for framework in ("align3gr", "transformers", "trl", "peft", "torch"):
        row = f"| {framework} | {meta['frameworks'][framework]['version']} |"
        assert row in body, framework
    assert "| transformers | " + read_json(run / "sft" / "config.json")["transformers_version"] in body
    assert "@software{vonwerra2020trl," in body and "Align3GR: Unified Multi-Level Alignment" in body
    assert "eprint        = {2511.11255}" in body  # the paper by arXiv ID, not by title alone


@pytest.mark.parametrize(
    ("base", "license", "name"),
    [
        ("meta-llama/Llama-2-7b-hf", "llama2", None),
        ("meta-llama/Llama-2-13b-chat-hf", "llama2", None),
        ("Qwen/Qwen2.5-0.5B", "apache-2.0", None),
        ("Qwen/Qwen2.5-7B-Instruct", "apache-2.0", None),
        ("Qwen/Qwen2.5-3B-Instruct", "other", "qwen-research"),
        ("Qwen/Qwen2.5-72B", "other", "qwen"),
        ("Qwen/Qwen2.5-Coder-7B", "unknown", None),
        ("someone/some-model", "unknown", None),
    ],
)
def test_license_of_well_known_bases(base, license, name, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache: no base model card
    found = base_license(base, base)
    assert (found.license, found.license_name) == (license, name) and found.license in HUB_LICENSES
    assert (found.license_link or "").startswith("https://huggingface.co/Qwen/") == (license == "other")


def test_license_from_the_base_models_card(tmp_path, monkeypatch):
    """A local base folder's card, or a Hub base's card in the local cache, wins over the table; the tiny base is
    align3gr's own."""
    folder = tmp_path / "Llama-2-7b-hf"
    folder.mkdir()
    readme = folder / "README.md"
    readme.write_text("---\nlicense: other\nlicense_name: custom\nlicense_link: LICENSE\n---\n# A base\n")
    assert base_license(str(folder), str(folder)) == License(
        "other", "custom", "LICENSE", "the card of the base model Llama-2-7b-hf"
    )  # the folder's name, not its path: a published card shows no local folder
    readme.write_text("# A base without metadata\n")
    assert base_license(str(folder), str(folder)).license == "llama2"
    snapshot = tmp_path / "hub" / "models--someone--base" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "README.md").write_text("---\nlicense: mit\n---\n")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    found = base_license("someone/base", "someone/base")
    assert (found.license, found.source) == ("mit", "the card of the base model someone/base")
    assert base_license(str(tmp_path / "run" / "sft_base"), "tiny") == TOOLKIT


@pytest.mark.parametrize(
    ("builder", "files", "dataset_id", "terms"),
    [
        ("movielens", ["u.data", "u.item", "u.user"], "movielens-100k", "GroupLens"),
        ("movielens", ["ratings.dat", "movies.dat", "users.dat"], "movielens-1m", "GroupLens"),
        ("amazon", ["reviews_Beauty_5.json.gz", "meta_Beauty.json.gz"], "amazon-reviews-beauty", "McAuley"),
        ("yelp", ["business.json", "review.json"], "yelp-open-dataset", "non-commercial"),
        ("lcrec", ["Instruments.inter.json", "Instruments.item.json"], "instruments", "LC-Rec"),
        ("my_logs", ["events.csv"], "my-logs", "its owner's terms"),
    ],
)
def test_dataset_terms(builder, files, dataset_id, terms):
    found = dataset_terms({"builder": {"name": builder}, "sources": [{"file": name} for name in files]})
    assert found.id == dataset_id and terms in found.terms
    validate_repo_id(found.id)


def test_published_folder_recommends_as_the_run(published, run):
    """The acceptance: for test users, `recommend(history, k)` is the run's ranked list cut to k, from the
    published folder and from the run's own sft/ folder; a batch of all test users gives the same lists."""
    recommender = align3gr.load_recommender(published)
    histories = histories_before_test(run)
    rows = predictions(run)
    for row in rows[:6]:
        history = histories[row["user_id"]]
        assert recommender.recommend(history, k=10, user_id=row["user_id"]) == row["ranked"][:10]
        scored = recommender.recommend_with_scores(history, k=20, user_id=row["user_id"])
        assert [item for item, _ in scored] == row["ranked"]
        assert [score for _, score in scored] == pytest.approx(row["scores"], abs=1e-4)
    ranked = recommender.rank([histories[r["user_id"]] for r in rows], 5, [r["user_id"] for r in rows])
    assert [r.items for r in ranked] == [row["ranked"][:5] for row in rows]
    from_run = align3gr.load_recommender(run / "sft")
    assert from_run.settings == recommender.settings
    row = rows[-1]
    assert from_run.recommend(histories[row["user_id"]], 10, row["user_id"]) == row["ranked"][:10]


def test_the_card_shows_every_k_the_run_was_evaluated_at(run, tmp_path):
    """An evaluation at other K than the pipeline's 5 and 10 (stage commands take any `--ks`) has its columns."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = copy / "eval" / "test" / "sft" / "metrics.json"
    metrics = read_json(path)
    write_json(path, {**metrics, "recall@20": 0.4, "ndcg@20": 0.2, "coverage@20": 0.3})
    out = tmp_path / "published"
    assert main(["push", "--run", str(copy), "--stage", "sft", "--to-folder", str(out)]) == 0
    header = next(line for line in (out / "README.md").read_text().splitlines() if line.startswith("| stage |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns == ["stage", "recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "coverage@20",
                       "valid_rate", "users"]  # fmt: skip


def test_a_model_evaluated_in_bfloat16_recommends_in_bfloat16(run, tmp_path):
    """The published settings carry the test evaluation's dtype, which `load_recommender` loads the weights in, so
    the ranked lists are the evaluation's; settings written before the field was recorded load in float32."""
    from align3gr.evaluate.config import EvaluateConfig

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "eval" / "test" / "sft")
    run_evaluate(copy / "sft", copy / "data", copy / "eval" / "test" / "sft", EvaluateConfig(dtype="bfloat16"))
    out = tmp_path / "published"
    assert main(["push", "--run", str(copy), "--stage", "sft", "--to-folder", str(out)]) == 0
    assert read_json(out / "align3gr.json")["dtype"] == "bfloat16"
    recommender = align3gr.load_recommender(out)
    assert next(recommender.model.parameters()).dtype == torch.bfloat16
    histories = histories_before_test(copy)
    for row in predictions(copy)[:4]:
        assert recommender.recommend(histories[row["user_id"]], k=10, user_id=row["user_id"]) == row["ranked"][:10]
    older = {k: v for k, v in read_json(out / "align3gr.json").items() if k != "dtype"}
    write_json(out / "align3gr.json", older)
    assert next(align3gr.load_recommender(out).model.parameters()).dtype == torch.float32


def test_recommender_input_errors_and_unknown_users(published, run, caplog):
    recommender = align3gr.load_recommender(published)
    history = histories_before_test(run)[predictions(run)[0]["user_id"]]
    with pytest.raises(DataError, match=r"item 'no-such-item' of user_history is not in the catalogue"):
        recommender.recommend([*history, "no-such-item"])
    with pytest.raises(ConfigError, match="non-empty list of item IDs"):
        recommender.recommend([])
    with pytest.raises(ConfigError, match="non-empty list of item IDs"):
        recommender.recommend(history[0])
    catalogue = len(recommender.item_codes)
    for k in (0, catalogue + 1):
        with pytest.raises(ConfigError, match=f"k must be between 1 and the catalogue's {catalogue} items, got {k}"):
            recommender.recommend(history, k=k)
    anonymous = recommender.recommend(history, k=10)
    assert recommender.prompt(history, "stranger") == recommender.prompt(history)
    assert recommender.recommend(history, k=10, user_id="stranger") == anonymous
    assert "'stranger' has no SCID" in caplog.text
    text = recommender.tokenizer.decode(recommender.prompt(history))
    assert "the user" in text and "<ua_" not in text
    assert "<ua_" in recommender.tokenizer.decode(recommender.prompt(history, predictions(run)[0]["user_id"]))
    assert recommender.recommend([int(i) for i in history], k=10) == anonymous  # integer IDs are accepted
    with pytest.raises(DataError, match=r"item 'nope' of histories\[1\] \(user 'u7'\) is not in the catalogue"):
        recommender.rank([history, [*history, "nope"]], 5, [None, "u7"])
    with pytest.raises(ConfigError, match=r"^histories\[2\] must be a non-empty list of item IDs, got \[\]"):
        recommender.rank([history, history, []], 5)


def test_the_recommender_excludes_the_history_as_its_evaluation_did(published, run):
    """`exclude_seen` None (the default) follows the evaluation's `exclude_history`: a run evaluated with the
    history in the ranking is reproduced with it, unless told otherwise."""
    recommender = align3gr.load_recommender(published)
    history = histories_before_test(run)[predictions(run)[0]["user_id"]]
    assert recommender.settings.exclude_history
    excluded = recommender.recommend(history, k=30)
    assert not set(excluded) & set(history) and excluded == recommender.recommend(history, k=30, exclude_seen=True)
    recommender.settings = dataclasses.replace(recommender.settings, exclude_history=False)
    included = recommender.recommend(history, k=30)
    assert included == recommender.recommend(history, k=30, exclude_seen=False) and set(included) & set(history)
    assert recommender.recommend(history, k=30, exclude_seen=True) == excluded
    assert len(recommender.recommend(history, k=30)) == 30


def test_unknown_stage_and_other_folders_are_refused(run, tmp_path, capsys):
    out = tmp_path / "out"
    nested = tmp_path / "new" / "out"
    assert main(["push", "--run", str(run), "--stage", "rf_hard", "--to-folder", str(nested)]) == 2
    assert "--stage 'rf_hard'" in capsys.readouterr().err.replace("error: ", "")
    assert not (tmp_path / "new").exists()  # refused before anything is written, its parent included
    assert main(["push", "--run", str(tmp_path / "no-run"), "--stage", "sft", "--to-folder", str(out)]) == 2
    assert "no-run: no such run folder" in capsys.readouterr().err
    assert main(["push", "--run", str(run), "--stage", "sft", "--to-folder", str(out), "--dtype", "fp8"]) == 2
    assert "--dtype 'fp8': expected one of auto, float32, bfloat16, float16" in capsys.readouterr().err
    assert not out.exists()
    assert main(["push", "--run", str(run), "--stage", "sft"]) == 2
    assert "give --repo-id ID to upload, or --to-folder PATH" in capsys.readouterr().err
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["push", "--run", str(run), "--stage", "sft", "--to-folder", str(precious)]) == 2
    assert "is not an earlier `align3gr push` output" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
    assert main(["push", "--run", str(run), "--stage", "sft", "--to-folder", str(precious / "notes.txt")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_folders_without_a_model_or_with_malformed_files_are_refused(published, run, tmp_path):
    with pytest.raises(ConfigError, match=r"scid: no model \(config\.json or adapter_config\.json\)"):
        align3gr.load_recommender(run / "scid")
    broken = tmp_path / "broken"
    shutil.copytree(published, broken)
    (broken / "align3gr.json").write_text("[]")
    with pytest.raises(DataError, match=r"align3gr\.json: expected a JSON object, got list"):
        align3gr.load_recommender(broken)


def test_stages_present_are_listed(run, tmp_path, capsys):
    assert main(["push", "--run", str(run), "--stage", "sp_hard", "--to-folder", str(tmp_path / "o")]) == 2
    assert "stages present: sft, sp_easy" in capsys.readouterr().err


def test_upload_needs_a_token_and_the_hub(run, tmp_path, monkeypatch, capsys):
    """No token (HF_TOKEN unset, an empty HF_HOME): a clear error before any file is written or network used;
    with a token but HF_HUB_OFFLINE set: the same, pointing to --to-folder."""
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    argv = ["push", "--run", str(run), "--stage", "sft", "--repo-id", "me/ml100k-sft", "--private"]
    assert main(argv) == 2
    assert "no Hugging Face token: run `hf auth login`" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(argv) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_an_unreachable_hub_is_a_clear_error(run, tmp_path, monkeypatch, capsys):
    """A Hub that refuses the connection (an endpoint on a closed local port): one line naming the upload and the
    way to write it locally, not a traceback; no temporary folder is left behind. The temporary folders go to a
    folder of the test's own (the system's is shared with other tests and processes), dated back to the epoch: the
    push wrote its staging folder there (the folder's mtime moved) and removed it."""
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    os.utime(temp, ns=(0, 0))
    assert main(["push", "--run", str(run), "--stage", "sft", "--repo-id", "me/ml100k-sft"]) == 2
    err = capsys.readouterr().err
    assert "upload of" in err and "to me/ml100k-sft failed (" in err and "--to-folder PATH" in err
    assert "Traceback" not in err
    assert temp.stat().st_mtime_ns != 0 and list(temp.iterdir()) == []


def test_load_recommender_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such local folder, and not a Hub repo id"):
        align3gr.load_recommender(tmp_path / "runs" / "missing" / "sft")
    with pytest.raises(ConfigError, match="neither reachable .* nor in the local Hugging Face cache"):
        align3gr.load_recommender("nobody-here/no-such-model")
    with pytest.raises(ConfigError, match="no item_codes.json"):
        align3gr.load_recommender(tmp_path)


def test_a_lora_output_moved_with_its_local_base_loads_the_base_beside_it(data, tmp_path):
    """PEFT records the tiny base by its absolute path: a run folder moved (or renamed) with it loads the base that
    moved with it, the same model as before the move."""
    build_lora_model(data, tmp_path / "run" / "sft")
    before = load_for_inference(tmp_path / "run" / "sft")[0].state_dict()
    (tmp_path / "run").rename(tmp_path / "moved")
    assert not (tmp_path / "run").exists()
    after = load_for_inference(tmp_path / "moved" / "sft")[0].state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_lora_adapter_on_a_local_base_is_published_merged(data, tmp_path):
    run = build_run(data, tmp_path / "run", build_lora_model)
    out = tmp_path / "published"
    assert main(["push", "--run", str(run), "--stage", "sft", "--to-folder", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    meta = read_json(out / "meta.json")
    assert meta["merged_adapter"] and not meta["adapter"] and meta["base_model"] is None
    assert "merged into it and published as a full model" in (out / "README.md").read_text()
    merged = hub_conformant(out / "README.md").data
    assert merged.library_name == "transformers" and merged.base_model is None and "lora" in merged.tags
    recommender = align3gr.load_recommender(out)
    histories = histories_before_test(run)
    rows = predictions(run)
    ranked = recommender.rank([histories[r["user_id"]] for r in rows], 10, [r["user_id"] for r in rows])
    assert [r.items for r in ranked] == [row["ranked"][:10] for row in rows]
    assert meta["weights_dtype"] == meta["evaluated_dtype"] == "float32"
    assert "measured in" not in (out / "README.md").read_text()

    cast = tmp_path / "cast"  # a merge cast to bfloat16: loaded as saved, the card says the metrics are float32's
    assert main(["push", "--run", str(run), "--stage", "sft", "--to-folder", str(cast), "--dtype", "bfloat16"]) == 0
    assert read_json(cast / "align3gr.json")["dtype"] == "bfloat16"
    assert read_json(cast / "meta.json")["weights_dtype"] == "bfloat16"
    assert read_json(cast / "meta.json")["evaluated_dtype"] == "float32"
    assert "saved in bfloat16; the metrics above were measured in float32" in (cast / "README.md").read_text()
    assert next(align3gr.load_recommender(cast).model.parameters()).dtype == torch.bfloat16

    adapter_config = read_json(run / "sft" / "adapter_config.json")  # the same adapter, as if on a Hub model
    write_json(run / "sft" / "adapter_config.json", {**adapter_config, "base_model_name_or_path": "someone/tiny-base"})
    assert main(["push", "--run", str(run), "--stage", "sft", "--to-folder", str(out)]) == 0
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    meta = read_json(out / "meta.json")
    assert meta["adapter"] and not meta["merged_adapter"] and meta["base_model"] == "someone/tiny-base"
    adapter = hub_conformant(out / "README.md").data
    assert adapter.library_name == "peft" and adapter.base_model == "someone/tiny-base" and "peft" in adapter.tags
    assert read_json(out / "meta.json")["frameworks"]["peft"]["recorded_by"] == "adapter_config.json (training)"
    with pytest.raises(ConfigError, match="someone/tiny-base"):  # offline: the base cannot be fetched
        align3gr.load_recommender(out)


def test_a_push_replaces_an_earlier_push_folder_only_when_it_holds_nothing_else(run, tmp_path, capsys):
    """A push folder the user has since made a git clone of the Hub repo, or added notes to, is refused with the
    files named: replacing it would delete them. An earlier push's folder as written is replaced."""
    out = tmp_path / "out"
    argv = ["push", "--run", str(run), "--stage", "sft", "--to-folder", str(out)]
    assert main(argv) == 0 and main(argv) == 0
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert main(argv) == 2
    assert "holds files no push wrote (.git, .git/HEAD)" in capsys.readouterr().err
    assert (out / ".git" / "HEAD").is_file() and (out / "align3gr.json").is_file()
    shutil.rmtree(out / ".git")
    (out / PUSHED_FILES).unlink()  # a push of an older align3gr
    assert main(argv) == 2
    assert "without the list of its files" in capsys.readouterr().err


def test_stage_folders_of_an_earlier_config_stay_out_of_the_card(run, tmp_path, caplog):
    """A pipeline re-run on a config without a stage leaves that stage's folders: with the run's `summary.json`,
    the card's table holds the last pipeline's stages only, and pushing a stage it lacks says so."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    stages = [{"stage": name, "status": "ran"} for name in ("data", "embed", "tokenize", "popular", "sft")]
    write_json(copy / "summary.json", {"run_dir": str(copy), "stages": stages})
    out = tmp_path / "published"
    assert main(["push", "--run", str(copy), "--stage", "sft", "--to-folder", str(out)]) == 0
    lines = (out / "README.md").read_text().splitlines()
    rows = [line.split("|")[1].strip() for line in lines if line.startswith("| ")]
    assert "sp_easy" not in rows and any("sft" in row for row in rows)
    with caplog.at_level(logging.WARNING):
        assert main(["push", "--run", str(copy), "--stage", "sp_easy", "--to-folder", str(tmp_path / "stale")]) == 0
    assert "sp_easy is not a stage of the run's last pipeline" in caplog.text
