"""The `device` option of `embed` and `tokenize`: resolution, checks when the config is read, the log line and the
report, step keys that ignore it, and the CPU path giving the same bytes for `auto` and `cpu`."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from test_tokenize import SMALL

from align3gr.config import config_from_sources, fingerprint_options
from align3gr.devices import resolve_device
from align3gr.embed.config import EmbedConfig
from align3gr.embed.semantic import SemanticEncoder
from align3gr.embed.stage import run_embed
from align3gr.errors import ConfigError
from align3gr.pipeline.config import load_pipeline_config
from align3gr.pipeline.plan import Plan, in_run, lineage_key, pipeline_steps
from align3gr.tokenize.config import TokenizeConfig
from align3gr.tokenize.stage import run_tokenize

ACCELERATOR = torch.accelerator.current_accelerator(check_available=True)
RECIPE = Path(__file__).resolve().parent.parent / "recipes/configs/ml100k.yaml"


def digests(folder, names: list[str]) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


def test_auto_is_the_accelerator_or_the_cpu_and_cpu_is_the_cpu():
    assert resolve_device("auto") == (ACCELERATOR or torch.device("cpu"))
    assert resolve_device("cpu") == torch.device("cpu")
    assert EmbedConfig().device == TokenizeConfig().device == "auto"


@pytest.mark.skipif(ACCELERATOR is not None, reason="this machine has an accelerator")
def test_a_device_this_machine_lacks_is_an_error_when_the_stage_resolves_it():
    with pytest.raises(ConfigError, match=r"device='cuda:1': this machine has no cuda device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("value", ["gpu", "meta", "cuda:x", "CPU"])
def test_a_bad_device_is_an_error_naming_section_option_value_and_choices_when_read(tmp_path, value):
    path = tmp_path / "config.yaml"
    path.write_text(f"embed:\n  device: {value}\ntokenize:\n  device: cpu\n")
    with pytest.raises(ConfigError) as error:
        config_from_sources(EmbedConfig, path)
    assert f"section 'embed': device={value!r}: expected auto" in str(error.value)
    assert "cpu, cuda, mps, xpu" in str(error.value)
    assert config_from_sources(TokenizeConfig, path).device == "cpu"
    with pytest.raises(ConfigError, match=rf"--device={value!r}: expected auto"):
        config_from_sources(TokenizeConfig, overrides={"device": value})
    with pytest.raises(ConfigError, match=rf"device={value!r}"):
        TokenizeConfig(device=value).validate()


def test_step_keys_ignore_the_device():
    """embed's keys keep the `cpu` they always recorded; tokenize's never held one."""
    for device in ("auto", "cpu", "cuda:1"):
        assert fingerprint_options(EmbedConfig(device=device)) == fingerprint_options(EmbedConfig(device="cpu"))
        assert fingerprint_options(EmbedConfig(device=device))["device"] == "cpu"
        assert "device" not in fingerprint_options(TokenizeConfig(device=device))


def test_the_pipeline_steps_keys_and_folders_do_not_depend_on_the_device(tmp_path):
    default = load_pipeline_config(RECIPE)
    moved = default.replace("embed", device="cuda").replace("tokenize", device="cuda:1")

    def steps(config) -> list:
        plan = Plan(config, RECIPE, tmp_path, in_run(tmp_path))
        return [(step.name, step.options, lineage_key(step.lineage)) for step in pipeline_steps(plan)]

    assert steps(moved) == steps(default)
    embed = next(options for name, options, _ in steps(default) if name == "embeddings")
    assert embed["device"] == "cpu"  # as every embed step key recorded it before the option was resolved


def test_the_semantic_encoder_gives_the_same_vectors_on_auto_and_cpu():
    texts = ["Title: Heat (1995)", "Categories: Action > Crime", "a user who likes westerns"]
    auto, cpu = SemanticEncoder(device="auto"), SemanticEncoder(device="cpu")
    assert auto.device == resolve_device("auto") and cpu.device == torch.device("cpu")
    assert np.array_equal(auto.encode(texts), cpu.encode(texts))


def test_embed_and_tokenize_write_the_same_bytes_on_auto_and_cpu_and_log_the_device(
    ml100k_small, ml100k_small_embeddings, semantic_cache, tmp_path, caplog
):
    cache = str(semantic_cache)
    embedded = {}
    for device in ("auto", "cpu"):
        with caplog.at_level(logging.INFO, logger="align3gr.devices"):
            caplog.clear()
            report = run_embed(ml100k_small, tmp_path / device / "embeddings", EmbedConfig(cf_epochs=2,
                               cache_dir=cache, device=device)).report  # fmt: skip
            assert f"embed: computing on {resolve_device(device)} (device: {device})" in caplog.text
        assert report["device"] == str(resolve_device(device))
        names = ["semantic.safetensors", "collaborative.safetensors", "collaborative_encoder.safetensors"]
        embedded[device] = digests(tmp_path / device / "embeddings", names)
    assert embedded["auto"] == embedded["cpu"]
    tokenized = {}
    for device in ("auto", "cpu"):
        with caplog.at_level(logging.INFO, logger="align3gr.devices"):
            caplog.clear()
            out = tmp_path / device / "scid"
            report = run_tokenize(ml100k_small, ml100k_small_embeddings, out, TokenizeConfig(**SMALL, device=device))
            assert f"tokenize: computing on {resolve_device(device)} (device: {device})" in caplog.text
        assert report["device"] == str(resolve_device(device))
        assert any(line.split()[:2] == ["device", report["device"]] for line in report.render().splitlines())
        names = ["item_codes.json", "user_codes.json", "tokenizer.safetensors", "tokenizer_config.json"]
        tokenized[device] = digests(out, names)
        assert '"device"' not in (out / "tokenizer_config.json").read_text()  # as written before the option
    assert tokenized["auto"] == tokenized["cpu"]
