"""What TRL's own model card records about training, kept for the published card: the framework versions and the
TRL trainer with the paper it cites. TRL's trainers write that card (`create_model_card`) into checkpoint folders
only, which a stage output does not keep, so `push` records the same facts in the published `meta.json`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from align3gr.hub.run_layout import SFT
from align3gr.io import read_json
from align3gr.models.loading import ADAPTER_CONFIG

FRAMEWORKS = ("transformers", "trl", "peft", "torch", "datasets", "tokenizers")
ENVIRONMENT = "publishing environment"
TRAINING_RECORDS = (("transformers", "transformers_version", "config.json"), ("peft", "peft_version", ADAPTER_CONFIG))
"""(framework, key, file): the versions a stage folder's own files record at training."""


def installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def framework_versions(folder: Path, meta: dict) -> dict[str, dict[str, str]]:
    """`{framework: {"version", "recorded_by"}}` of a stage folder: align3gr from its meta.json, transformers from its
    config.json and peft from its adapter_config.json (written at training), the others of this environment."""
    recorded = {"align3gr": (meta.get("align3gr_version"), "meta.json (training)")}
    for name, key, file in TRAINING_RECORDS:
        if (folder / file).is_file():
            recorded[name] = (read_json(folder / file).get(key), f"{file} (training)")
    versions = {}
    for name in ("align3gr", *FRAMEWORKS):
        found, source = recorded.get(name, (None, ""))
        found, source = (found, source) if found else (installed(name), ENVIRONMENT)
        if found:
            versions[name] = {"version": found, "recorded_by": source}
    return versions


def trainer_record(stage: str) -> dict:
    """The TRL trainer class a stage was trained with: its name, TRL's tags for it, the paper TRL cites for it."""
    if stage == SFT:
        from align3gr.sft.trainer import SCIDSFTTrainer as trainer
    else:
        from align3gr.dpo.trainer import SoftmaxDPOTrainer as trainer
    return {
        "class": trainer.__name__,
        "name": getattr(trainer, "_name", trainer.__name__),
        "tags": list(getattr(trainer, "_tag_names", [])),
        "paper": dict(getattr(trainer, "_paper", {})),
    }
