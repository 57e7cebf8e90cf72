"""Local model folders: the checks and the identity hash shared by every stage that loads one."""

from __future__ import annotations

import hashlib
from pathlib import Path

from align3gr.errors import ConfigError


def require_model_folder(path: str | Path, option: str) -> Path:
    """`path` as a Path, or a ConfigError naming `option` when it is not a Hugging Face model folder."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{option}={str(path)!r}: expected a local model folder with config.json")
    return folder


def require_full_model(path: str | Path, option: str) -> Path:
    """`require_model_folder`, saying so when the folder holds a LoRA adapter (a run's `sft/` trained with
    `use_lora`) rather than a full model."""
    folder = Path(path)
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        raise ConfigError(
            f"{option}={str(path)!r}: a LoRA adapter folder, not a full model; give its base model (the adapter's "
            "base_model_name_or_path) or a folder with the adapter merged in"
        )
    return require_model_folder(path, option)


def model_identity(folder: Path) -> str:
    """A short hash of a model folder's config and weight file names and sizes, for cache keys."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def local_models(*names: str | None) -> dict[str, dict[str, str]]:
    """`{"models": {folder: identity}}` of the model options naming a local model folder (`model_identity`: its config
    and weight files), for the fingerprints of the steps loading them: the path alone would keep such a step current
    after the folder's model was replaced. Nothing when no option names one, so Hub ids and built-in models key as
    before."""
    folders = {name: model_identity(Path(name)) for name in names if name and (Path(name) / "config.json").is_file()}
    return {"models": folders} if folders else {}
