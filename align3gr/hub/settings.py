"""`align3gr.json`: how a published model is prompted and decoded, so `load_recommender` repeats the run's evaluation.

The settings are those of the stage's test evaluation (`eval/test/STAGE/metrics.json`: paraphrase, beam width,
history exclusion, decoder, user SCIDs, weights dtype) and of the dataset (history length). One rule gives the history
length: the `align3gr.json`'s when the folder has one (what the published model was evaluated with), else the
`max_history` of the dataset the model is used with (`--data`, else the run's `data/`), as `align3gr evaluate --model
X --data D` cuts its prompts, else the default 20. The sequential-task template itself is stored, so a model keeps its
prompt whatever templates a later align3gr ships. Evaluations and settings written before `exclude_history` existed
did not exclude history, and those before `dtype` was recorded ran in float32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import align3gr
from align3gr.data.dataset import DEFAULT_MAX_HISTORY
from align3gr.errors import DataError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.hub.run_layout import metrics_by_stage, run_data, run_of
from align3gr.io import read_json, read_json_object, write_json
from align3gr.sft.tasks import SEQ_FORMATS, load_templates, trained_prompting
from align3gr.stage_output import META_FILE

SETTINGS_FILE = "align3gr.json"
RANKING_DECODERS = ("beam_search", "generate", "exhaustive")
LEGACY_DEFAULTS = {"seq_format": "prompt", "exclude_history": False, "dtype": "float32"}
"""Fields of settings written before task A had two forms, before evaluation excluded histories and before the
evaluation's dtype was recorded."""


@dataclass(frozen=True)
class InferenceSettings:
    """The prompt and the constrained decoding of the run's test evaluation, and where the model came from."""

    stage: str | None
    with_user_scid: bool
    paraphrase: int
    seq_template: str
    seq_format: str
    beam_size: int
    exclude_history: bool
    decoder: str
    dtype: str
    max_history: int
    align3gr_version: str

    def save(self, folder: Path) -> None:
        """Write `align3gr.json` into `folder`."""
        write_json(folder / SETTINGS_FILE, asdict(self))

    @classmethod
    def load(cls, path: Path) -> InferenceSettings:
        """The settings of an `align3gr.json`, or a DataError naming the missing field."""
        values = {**LEGACY_DEFAULTS, **read_json_object(path)}
        missing = [f.name for f in fields(cls) if f.name not in values]
        if missing:
            raise DataError(f"missing field {missing[0]!r} (expected {', '.join(f.name for f in fields(cls))})", path)
        return cls(**{f.name: values[f.name] for f in fields(cls)})


def settings_of_stage(folder: Path, data_dir: Path | None = None) -> InferenceSettings:
    """The settings of a stage output folder: from its run's test evaluation when it lies in a run (`runs/NAME/sft`,
    `runs/NAME/dpo/STAGE`), else the evaluation defaults and the model's own meta.json; the history length of the
    dataset `data_dir` (default: the run's `data/`)."""
    run_dir, stage = run_of(folder) or (None, None)
    metrics = metrics_by_stage(run_dir).get(stage, {}) if run_dir else {}
    options = {**vars(EvaluateConfig()), **metrics.get("config", {})}
    data_dir = data_dir or run_data(folder)
    data = read_json(data_dir / META_FILE) if data_dir else {}
    paraphrase, with_user_scid = int(options["paraphrase"]), options["with_user_scid"]
    trained_user_scid, seq_format = trained_prompting(folder)
    return InferenceSettings(
        stage=stage,
        with_user_scid=trained_user_scid if with_user_scid is None else bool(with_user_scid),
        paraphrase=paraphrase,
        seq_template=load_templates()[SEQ_FORMATS[seq_format]][paraphrase],
        seq_format=seq_format,
        beam_size=int(metrics.get("beam_size", options["beam_size"])),
        exclude_history=bool(metrics.get("exclude_history", False) if metrics else options["exclude_history"]),
        decoder=options["decoder"] if options["decoder"] in RANKING_DECODERS else "beam_search",
        dtype=str(options["dtype"]),
        max_history=int(data.get("max_history", DEFAULT_MAX_HISTORY)),
        align3gr_version=align3gr.__version__,
    )


def settings_of(folder: Path, data_dir: Path | None = None) -> InferenceSettings:
    """The settings of a published folder (its `align3gr.json`, `data_dir` unused) or of a stage folder used with the
    dataset `data_dir` (default: its run's `data/`)."""
    path = folder / SETTINGS_FILE
    return InferenceSettings.load(path) if path.is_file() else settings_of_stage(folder, data_dir)
