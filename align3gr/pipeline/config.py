"""The pipeline's config: one YAML with a section per stage, the same sections the stage commands read.

`align3gr sft --config X.yaml` reads the `sft:` section of the file `align3gr pipeline --config X.yaml` reads, so a
stage run alone and inside the pipeline get the same options and give the same result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from align3gr.config import config_from_sources, config_to_dict, merged, read_yaml_mapping
from align3gr.data.config import DataConfig, SourceConfig
from align3gr.dpo.config import DPOStageConfig
from align3gr.embed.config import EmbedConfig
from align3gr.errors import ConfigError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.io import atomic_write_text
from align3gr.pipeline.summary import REPORTED_KS
from align3gr.sft.config import SFTStageConfig
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.unisid.config import UniSIDConfig

SECTIONS: dict[str, type] = {
    "source": SourceConfig,
    "data": DataConfig,
    "embed": EmbedConfig,
    "tokenize": TokenizeConfig,
    "sft": SFTStageConfig,
    "evaluate": EvaluateConfig,
    "dpo": DPOStageConfig,
}


@dataclass(frozen=True)
class PipelineConfig:
    """Every stage's options, each section resolved as the stage's own command resolves it."""

    source: SourceConfig
    data: DataConfig
    embed: EmbedConfig
    tokenize: TokenizeConfig
    sft: SFTStageConfig
    evaluate: EvaluateConfig
    dpo: DPOStageConfig

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """`{section: options}`: what summary.json and config.yaml record."""
        return {name: config_to_dict(getattr(self, name)) for name in SECTIONS}

    def unisid(self) -> UniSIDConfig | None:
        """UniSID's options when it makes the item codes, else None."""
        tokenize = self.tokenize
        return UniSIDConfig(**tokenize.unisid_options) if tokenize.item_tokenizer == "unisid" else None

    def replace(self, section: str, **values: Any) -> PipelineConfig:
        """A copy with some options of one section changed (validated as the stage validates them)."""
        updated = dataclasses.replace(getattr(self, section), **values)
        updated.validate()
        return dataclasses.replace(self, **{section: updated})


def load_pipeline_config(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> PipelineConfig:
    """Read every section of `path` (sections it lacks get the stage's defaults), then `{section: {option: value}}`
    overrides. A top-level key that is not a section is an error naming it and the file."""
    unknown = sorted(set(read_yaml_mapping(path)) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r}; the pipeline's sections are {', '.join(SECTIONS)}")
    overrides = overrides or {}
    config = PipelineConfig(
        **{
            name: config_from_sources(cls, path, overrides.get(name), f"--training-arg, section {name!r}")
            for name, cls in SECTIONS.items()
        }
    )
    if config.sft.trust_remote_code:  # the stages after SFT load the model it trained, and its code, again
        config.evaluate.trust_remote_code = config.dpo.trust_remote_code = True
    missing = [k for k in REPORTED_KS if k not in config.evaluate.ks]
    if missing:
        raise ConfigError(
            f"{path}: evaluate.ks={config.evaluate.ks} lacks {missing}; a run's tables report Recall/NDCG@"
            f"{' and @'.join(map(str, REPORTED_KS))} (other cut-offs are computed too and kept in each metrics.json)"
        )
    try:  # the DPO stages' valid check takes the evaluate section's cut-offs: checked before any step runs
        config.dpo.valid_evaluation(config.evaluate)
    except ConfigError as err:
        raise ConfigError(f"{path}, section 'dpo': {err}") from None
    return config


TRAINING_ARGS_PLACES: dict[str, tuple[str, ...]] = {
    "sft": ("sft", "training_args"),
    "dpo": ("dpo", "training_args"),
    "unisid": ("tokenize", "unisid_options", "training_args"),
}
"""Where `pipeline --training-arg SECTION.KEY=VALUE` puts KEY, by SECTION (without one: sft's and dpo's)."""


def training_arg_overrides(pairs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The `{section: {option: value}}` overrides of `pipeline --training-arg [SECTION.]KEY=VALUE` pairs, merged into
    the sections' `training_args` as the stage commands' `--training-arg` are."""
    overrides: dict[str, Any] = {}
    for name, value in pairs.items():
        prefix, _, key = name.rpartition(".")
        if prefix and prefix not in TRAINING_ARGS_PLACES:
            raise ConfigError(
                f"--training-arg {name}={value}: expected [SECTION.]KEY=VALUE with SECTION one of "
                f"{', '.join(TRAINING_ARGS_PLACES)} (none: sft and dpo)"
            )
        for place in [prefix] if prefix else ["sft", "dpo"]:
            nested: Any = value
            for part in reversed((*TRAINING_ARGS_PLACES[place], key)):
                nested = {part: nested}
            overrides = merged(overrides, nested)
    return overrides


def write_pipeline_config(config: PipelineConfig, path: Path) -> None:
    """The resolved config as a YAML the pipeline and every stage command read back to the same options."""
    atomic_write_text(path, yaml.safe_dump(config.as_dict(), sort_keys=False))
