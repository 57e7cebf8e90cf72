"""`align3gr push`: publish one stage of a run as a Hugging Face model repo, or write the exact upload to a folder.

The published folder holds the model (a LoRA adapter whose base is a Hub id stays an adapter; one on a local base
folder, which no one else can load, is merged into it and published as a full model), the tokenizer with the SCID
tokens, both code tables, the tokenizer report (`tokenizer_report.json`, `code_usage.png`), the test metrics of
every evaluated stage (`metrics.json`), `align3gr.json` (what `load_recommender` needs), with `--with-titles` the
items' titles (`item_titles.json`, for `align3gr recommend`: the dataset's content, so not by default), a
`meta.json` (stage, base model when it is a Hub id, license, vocabulary sizes, configurations, data facts, TRL
trainer, framework versions) and the model card (`README.md`, see `model_card.py`), which must pass the Hub's
metadata check (`validate`) before an upload. The run's bookkeeping (training log, preference rows, the pickled
trainer arguments, fingerprints) is left out, and so are the training machine's folders and any token or secret
in the configurations (`publishable`). The token comes from `HF_TOKEN` or the login cache (`hf auth login`), never
from a file of the project.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

import align3gr
from align3gr.console import format_table
from align3gr.data.dataset import load_dataset
from align3gr.errors import Align3GRError, ConfigError, DataError
from align3gr.hub.base_license import base_license
from align3gr.hub.item_titles import ItemTitles
from align3gr.hub.model_card import model_card
from align3gr.hub.run_layout import last_pipeline_stages, metrics_by_stage, stage_folder
from align3gr.hub.settings import SETTINGS_FILE, settings_of_stage
from align3gr.hub.training_record import framework_versions, trainer_record
from align3gr.io import atomic_directory, read_json, write_json
from align3gr.models import DTYPES
from align3gr.models.loading import ADAPTER_CONFIG, load_for_inference
from align3gr.scid.code_tables import ITEM_CODES
from align3gr.stage_output import META_FILE

log = logging.getLogger(__name__)
MODEL_CARD = "README.md"
RUN_BOOKKEEPING = frozenset(
    {META_FILE, MODEL_CARD, "training_log.jsonl", "preferences.jsonl", "sft_config.yaml", "dpo_config.yaml",
     "training_args.bin"}
)  # fmt: skip
ADAPTER_FILES = frozenset({ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin"})
DATA_FACTS = ("builder", "sources", "statistics", "filters", "max_history", "split")


@dataclass
class PushResult:
    """Which stage of which run went where (a folder or a Hub URL), the files with their sizes, and whether an adapter
    was merged."""

    run: Path
    stage: str
    destination: str
    files: dict[str, int]
    merged: bool

    def render(self) -> str:
        """The table `align3gr push` prints: every file and its size."""
        rows = [{"file": name, "MB": size / 1e6} for name, size in self.files.items()]
        note = "; LoRA adapter merged into its local base" if self.merged else ""
        return "\n" + format_table(rows, f"Pushed {self.run} stage {self.stage} to {self.destination}{note}")


def base_model(folder: Path, meta: dict) -> str | None:
    """The base model the stage's weights were trained from: the adapter's base, else the one meta.json records."""
    if (folder / ADAPTER_CONFIG).is_file():
        return read_json(folder / ADAPTER_CONFIG).get("base_model_name_or_path")
    return meta.get("base_model")


def is_local(model: str | None) -> bool:
    """Whether a base model is a local folder (recorded as an absolute path by the SFT stage), not a Hub id."""
    return model is None or Path(model).is_absolute() or Path(model).is_dir()


def write_stage(
    run_dir: Path, stage: str, out: Path, source: str, dtype: str | None = None, with_titles: bool = False
) -> bool:
    """Write the published folder of `stage` into the empty folder `out`; True when an adapter was merged.
    `source` is the repo id (or path) the card tells readers to load; `dtype` that of a merge (default: evaluated);
    `with_titles` publishes the items' titles, which are the dataset's content (its terms may forbid it)."""
    folder = stage_folder(run_dir, stage)
    meta = read_json(folder / META_FILE)
    report = run_dir / "scid" / "report.json"
    if not report.is_file():
        raise DataError("not found: the run's SCID tokenizer report (written by `align3gr tokenize`)", report)
    data = read_json(run_dir / "data" / "meta.json")
    metrics = {name: {k: v for k, v in m.items() if k != "model"} for name, m in metrics_by_stage(run_dir).items()}
    metrics = publishable(metrics)
    if stage not in metrics:
        log.warning(
            "%s has no test evaluation (eval/test/%s/metrics.json): published without its metrics", stage, stage
        )
    base = base_model(folder, meta)
    adapter = (folder / ADAPTER_CONFIG).is_file()
    merge = adapter and is_local(base)
    if dtype is not None and not merge:
        raise ConfigError(f"--dtype {dtype}: applies to a LoRA adapter merged into its local base; {stage} has none")
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name not in RUN_BOOKKEEPING and not (merge and path.name in ADAPTER_FILES):
            shutil.copy2(path, out / path.name)
    if merge:
        dtype = dtype or metrics.get(stage, {}).get("config", {}).get("dtype", "float32")
        log.info("merging the LoRA adapter into its local base %s (%s): that folder is not on the Hub", base, dtype)
        trusted = bool(meta.get("config", {}).get("trust_remote_code"))  # the run's own SFT ran its base's code
        model, _ = load_for_inference(folder, dtype, trusted)
        model.save_pretrained(out)
    write_json(out / "tokenizer_report.json", publishable(read_json(report)))
    if (run_dir / "scid" / "code_usage.png").is_file():
        shutil.copy2(run_dir / "scid" / "code_usage.png", out / "code_usage.png")
    write_json(out / "metrics.json", metrics)
    if with_titles:
        ItemTitles.of_dataset(load_dataset(run_dir / "data"), read_json(folder / ITEM_CODES)).save(out)
    settings = settings_of_stage(folder)
    evaluated_dtype = settings.dtype
    if merge and dtype != evaluated_dtype:  # `recommend` loads the weights as saved; the card says what was measured
        settings = replace(settings, dtype=dtype)
    pipeline_config = run_dir / "config.yaml"
    pipeline = yaml.safe_load(pipeline_config.read_text()) if pipeline_config.is_file() else None
    published = {
        "stage": stage,
        "base_model": None if is_local(base) else base,
        "adapter": adapter and not merge,
        "merged_adapter": merge,
        "weights_dtype": settings.dtype,
        "evaluated_dtype": evaluated_dtype,
        "vocabulary": meta.get("vocabulary"),
        "config": publishable(meta.get("config", {})),
        "pipeline_config": publishable(pipeline),
        "data": publishable({key: data[key] for key in DATA_FACTS if key in data}),
        "align3gr_version": meta.get("align3gr_version"),
        "license": publishable(base_license(base, meta.get("config", {}).get("model")).to_dict()),
        "item_titles": with_titles,
        "trainer": trainer_record(stage),
        "frameworks": framework_versions(folder, meta),
    }
    write_json(out / META_FILE, published)
    settings.save(out)
    model_card(out, settings, source).save(out / MODEL_CARD)
    return merge


SECRET_KEY = re.compile(
    r"^(hub_token|push_to_hub_token|hf_token|auth_token|use_auth_token|access_token|api_token)$"
    r"|secret|password|passwd|api_?key|access_?key|credential",
    re.IGNORECASE,
)
"""Option names whose values a published file never shows (`hub_token` in `training_args`)."""
HF_TOKEN_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{20,}")
"""A Hugging Face token inside any string, whatever its key."""
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^/\s()'\"`]+/)+([^/\s()'\"`]+)")
"""An absolute POSIX path inside a string (a card's source note): its last part is kept."""


def publishable(value: Any) -> Any:
    """`value` as a published file shows it: every absolute path, alone or inside a string, reduced to its last part
    (the folders of the machine that trained it stay home; relative paths, Hub ids and sha256 stay), and the value of
    every secret-like key (`SECRET_KEY`) replaced by "<redacted>"."""
    if isinstance(value, dict):
        secret = {key for key, item in value.items() if item and SECRET_KEY.search(str(key))}
        return {key: "<redacted>" if key in secret else publishable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [publishable(item) for item in value]
    if isinstance(value, str) and Path(value).is_absolute():
        return Path(value).name
    if isinstance(value, str):
        return HF_TOKEN_VALUE.sub("<redacted>", ABSOLUTE_PATH.sub(lambda match: match[1], value))
    return value


def check_card(path: Path) -> None:
    """The Hub's own metadata check of the model card at `path` (`ModelCard.validate`, an HTTP call)."""
    from huggingface_hub import ModelCard

    try:
        ModelCard.load(path).validate()
    except ValueError as err:
        raise DataError(f"the Hub rejects the model card's metadata: {err}", MODEL_CARD) from None


def file_sizes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def hub_token() -> str:
    """The Hugging Face token of `HF_TOKEN` or the login cache, or an error saying how to provide one."""
    from huggingface_hub import constants, get_token

    token = get_token()
    if token is None:
        raise ConfigError("no Hugging Face token: run `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN")
    if constants.HF_HUB_OFFLINE:
        raise ConfigError("HF_HUB_OFFLINE is set: uploading needs the Hub; use --to-folder PATH to write it locally")
    return token


PUSHED_FILES = ".align3gr-push.json"
"""The files a `--to-folder` push wrote (relative paths), in that folder: a later push replaces the folder only when
it holds nothing else (a git clone of the Hub repo, notes added since)."""


def check_destination(folder: Path) -> None:
    """Refuse to replace a non-empty folder holding anything but the files an earlier push wrote (all of it would be
    deleted)."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--to-folder {folder}: is a file, not a folder; choose a new folder")
    if not folder.exists() or not any(folder.iterdir()):
        return
    if not (folder / SETTINGS_FILE).is_file():
        raise ConfigError(
            f"--to-folder {folder}: exists and is not an earlier `align3gr push` output; choose a new folder"
        )
    if not (folder / PUSHED_FILES).is_file():
        raise ConfigError(
            f"--to-folder {folder}: a push's output without the list of its files ({PUSHED_FILES}; an older "
            "align3gr's), so what else it holds is unknown: choose a new folder or empty it"
        )
    written = {*read_json(folder / PUSHED_FILES), PUSHED_FILES}
    folders = {str(parent) for w in written for parent in Path(w).parents}  # every folder a written file lies in
    present = (str(p.relative_to(folder)) for p in folder.rglob("*"))
    others = sorted(name for name in present if name not in written and name not in folders)
    if others:
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ConfigError(
            f"--to-folder {folder}: holds files no push wrote ({listed}), which replacing it would delete; "
            "choose a new folder"
        )


def check_repo_id(repo_id: str) -> None:
    """A ConfigError naming `--repo-id` unless it is a valid Hub repo id (`owner/name`), before anything is written."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(f"--repo-id {repo_id!r}: {err}") from None


def check_existing_repo(repo_id: str, files: list[str], is_private: bool, private: bool) -> None:
    """Refuse to upload over an existing Hub repo that is not an earlier push's (the upload replaces all its files),
    or with `--private` to one that is public (the Hub keeps an existing repo's visibility)."""
    if any(name not in (".gitattributes", MODEL_CARD) for name in files) and SETTINGS_FILE not in files:
        raise ConfigError(
            f"--repo-id {repo_id}: exists and is not an earlier `align3gr push` (no {SETTINGS_FILE}); the upload "
            "would delete its files: choose a new repo"
        )
    if private and not is_private:
        raise ConfigError(
            f"--repo-id {repo_id}: exists and is public; --private does not change an existing repo's visibility "
            "(make it private on the Hub first, or choose a new repo)"
        )


def push_run(
    run_dir: str | Path,
    stage: str,
    *,
    repo_id: str | None = None,
    to_folder: str | Path | None = None,
    private: bool = False,
    dtype: str | None = None,
    with_titles: bool = False,
) -> PushResult:
    """Publish `stage` of the run in `run_dir` to the Hub repo `repo_id` (created if needed: `private`, else with its
    owner's default visibility), or write the same files to `to_folder` (atomically; `repo_id` then only names the
    model in the card). `with_titles` adds the items' titles (`write_stage`)."""
    run_dir = Path(run_dir)
    if to_folder is None and repo_id is None:
        raise ConfigError("give --repo-id ID to upload, or --to-folder PATH to write the upload locally")
    if not run_dir.is_dir():
        raise ConfigError(f"--run {run_dir}: no such run folder (expected the --run-dir of `align3gr pipeline`)")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    stage_folder(run_dir, stage)  # an unknown stage is refused before anything is written
    current = last_pipeline_stages(run_dir)
    if current is not None and stage not in current:
        log.warning("%s is not a stage of the run's last pipeline (%s): its folder may hold a model of an earlier "
                    "config, on other data", stage, run_dir / "summary.json")  # fmt: skip
    if repo_id is not None:
        check_repo_id(repo_id)
    if to_folder is not None:
        to_folder = Path(to_folder)
        check_destination(to_folder)
        with atomic_directory(to_folder) as tmp:
            merged = write_stage(run_dir, stage, tmp, repo_id or str(to_folder), dtype, with_titles)
            write_json(tmp / PUSHED_FILES, sorted(file_sizes(tmp)))
        return PushResult(run_dir, stage, str(to_folder), file_sizes(to_folder), merged)

    from httpx2 import HTTPError  # the Hub client's: its HTTP status errors and connection failures derive from it
    from huggingface_hub import HfApi

    token = hub_token()
    with tempfile.TemporaryDirectory(prefix="align3gr-push-") as tmp:
        merged = write_stage(run_dir, stage, Path(tmp), repo_id, dtype, with_titles)
        files = file_sizes(Path(tmp))
        api = HfApi(token=token, library_name="align3gr", library_version=align3gr.__version__)
        log.info("uploading %d files (%.1f MB) to %s", len(files), sum(files.values()) / 1e6, repo_id)
        try:
            check_card(Path(tmp) / MODEL_CARD)
            if api.repo_exists(repo_id):
                info = api.model_info(repo_id, files_metadata=False)
                check_existing_repo(repo_id, [f.rfilename for f in info.siblings or []], bool(info.private), private)
            url = api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
            api.upload_folder(  # one commit; files of an earlier push that this one lacks are deleted
                folder_path=tmp, repo_id=repo_id, commit_message=f"align3gr push: stage {stage}", delete_patterns="*"
            )
        except (HTTPError, OSError) as err:
            raise Align3GRError(
                f"upload of {run_dir} stage {stage} to {repo_id} failed ({type(err).__name__}: {err}); "
                "--to-folder PATH writes the same files locally"
            ) from None
    return PushResult(run_dir, stage, str(url), files, merged)
