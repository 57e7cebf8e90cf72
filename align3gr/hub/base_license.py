"""The license of a published model: that of the base model its weights derive from, with where it was found.

In order: the embedded tiny model (built by align3gr, so the toolkit's Apache-2.0); the base's own model card (the
`README.md` front matter of a local base folder, or of a Hub base in the local Hugging Face cache: nothing is
downloaded); a table of well-known bases; else the Hub's `unknown`. Identifiers are the Hub's
(https://huggingface.co/docs/hub/repositories-licenses); a license outside that list is `other` with a
`license_name` and `license_link`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from align3gr.options import TINY

README = "README.md"


@dataclass(frozen=True)
class License:
    """A license as the Hub's card metadata names it (`license`, `license_name`, `license_link`), and its source."""

    license: str
    license_name: str | None = None
    license_link: str | None = None
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


QWEN_LICENSE = "https://huggingface.co/Qwen/Qwen2.5-{size}/blob/main/LICENSE"
KNOWN_BASES: tuple[tuple[re.Pattern, License], ...] = (
    (re.compile(r"^llama-2-\d+b(-chat)?(-hf)?$"), License("llama2")),
    (re.compile(r"^qwen2\.5-(0\.5|1\.5|7|14|32)b(-instruct)?$"), License("apache-2.0")),
    (re.compile(r"^qwen2\.5-3b(-instruct)?$"), License("other", "qwen-research", QWEN_LICENSE.format(size="3B"))),
    (re.compile(r"^qwen2\.5-72b(-instruct)?$"), License("other", "qwen", QWEN_LICENSE.format(size="72B"))),
)
"""Base names (the Hub id's or folder's last part, lower case) and their licenses, as their Hub cards state them:
Qwen2.5 is Apache-2.0 except the 3B (Qwen Research License) and the 72B (Qwen License); Llama-2 the Llama 2
Community License."""
TOOLKIT = License("apache-2.0", source="the embedded tiny model, built by align3gr (Apache-2.0)")


def card_license(readme: Path, base: str) -> License | None:
    """The license in the front matter of the model card of `base` (a Hub id or a folder's name, which the source
    names: a published card shows no local path), or None when it names none."""
    from huggingface_hub import ModelCard

    data = ModelCard.load(readme, ignore_metadata_errors=True).data
    if not data.get("license"):
        return None
    name, link = data.get("license_name"), data.get("license_link")
    return License(data["license"], name, link, f"the card of the base model {base}")


def cached_card(repo_id: str) -> Path | None:
    """The model card of a Hub repo when the local Hugging Face cache holds it (no download)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        path = try_to_load_from_cache(repo_id, README)
    except HFValidationError:
        return None
    return Path(path) if isinstance(path, str) else None


def known_base(name: str) -> License | None:
    """The license of a well-known base, by its name (`meta-llama/Llama-2-7b-hf`, a folder `Qwen2.5-3B`)."""
    short = name.rstrip("/").rsplit("/", 1)[-1]
    for pattern, known in KNOWN_BASES:
        if pattern.match(short.lower()):
            return replace(known, source="align3gr's table of well-known base models")
    return None


def base_license(base: str | None, model_option: str | None) -> License:
    """The license of the weights trained from `base` (a Hub id or a local folder; `model_option` is the stage's
    `model` setting, `tiny` for the embedded model)."""
    if model_option == TINY:
        return TOOLKIT
    if base is None:
        return License("unknown", source="the base model is not recorded")
    local = Path(base)
    readme, name = (local / README, local.name) if local.is_dir() else (cached_card(base), base)
    found = card_license(readme, name) if readme is not None and readme.is_file() else None
    return found or known_base(base) or License("unknown", source=f"no license found for the base model {name}")
