"""Local model folders: the checks and the identity hash shared by every stage that loads one."""

from __future__ import annotations

import hashlib
from pathlib import Path

from align3gr.errors import ConfigError
from align3gr.io import read_json, remembered_sha256


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


MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".model", ".txt", ".tiktoken", ".jinja")


def model_files(folder: Path) -> list[Path]:
    """The files `from_pretrained` may read from a model folder: its top-level configs, weights and tokenizer files,
    and those of the sentence-transformers modules its `modules.json` lists."""
    folders = [folder]
    if (folder / "modules.json").is_file():
        modules = read_json(folder / "modules.json")
        paths = [m.get("path") for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []
        folders += [folder / p for p in paths if isinstance(p, str) and p and (folder / p).is_dir()]
    return sorted(
        path for f in folders for path in f.iterdir() if path.suffix in MODEL_FILE_SUFFIXES and path.is_file()
    )


def model_identity(folder: Path) -> str:
    """A short hash of the contents of a model folder's `model_files`, for cache keys and step fingerprints: a model
    fine-tuned in place, with the same shapes, gets another identity (file contents are hashed once per size and
    modification time, `remembered_sha256`)."""
    digest = hashlib.sha256()
    for path in model_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{remembered_sha256(path)}\n".encode())
    return digest.hexdigest()[:16]


def local_models(*names: str | None) -> dict[str, dict[str, str]]:
    """`{"models": {folder: identity}}` of the model options naming a local model folder (`model_identity`: its config
    and weight files), for the fingerprints of the steps loading them: the path alone would keep such a step current
    after the folder's model was replaced. Nothing when no option names one, so Hub ids and built-in models key as
    before."""
    folders = {name: model_identity(Path(name)) for name in names if name and (Path(name) / "config.json").is_file()}
    return {"models": folders} if folders else {}
