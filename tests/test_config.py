"""Stage options from YAML files and flags: sections, flat files, defaults and unknown options."""

from __future__ import annotations

from pathlib import Path

import pytest

from align3gr.config import SECTION_NAMES, config_from_sources
from align3gr.data.config import SourceConfig
from align3gr.dpo.config import DPOStageConfig
from align3gr.embed.config import EmbedConfig
from align3gr.errors import ConfigError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.models.local import require_full_model
from align3gr.pipeline.config import SECTIONS, load_pipeline_config
from align3gr.sft.config import SFTStageConfig
from align3gr.tokenize.config import TokenizeConfig


def test_a_pipeline_file_gives_each_stage_its_section_and_defaults_elsewhere(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  user_k: 5\ndpo:\n  beta: 0.3\n  stages: [sp_easy]\n")
    dpo = config_from_sources(DPOStageConfig, path, {"num_rejected": 4})
    assert (dpo.beta, dpo.stages, dpo.num_rejected) == (0.3, ["sp_easy"], 4)
    assert config_from_sources(EmbedConfig, path) == EmbedConfig()


def test_a_flat_file_is_one_stages_options(tmp_path):
    path = tmp_path / "dpo.yaml"
    path.write_text("beta: 0.2\nstages: [rf_easy]\n")
    assert config_from_sources(DPOStageConfig, path).stages == ["rf_easy"]
    path.write_text("beta: 0.2\nbeam: 3\n")
    with pytest.raises(ConfigError, match="unknown option 'beam' for DPOStageConfig"):
        config_from_sources(DPOStageConfig, path)
    with pytest.raises(ConfigError, match="config file not found"):
        config_from_sources(DPOStageConfig, tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "path", sorted(Path(__file__).resolve().parent.parent.glob("recipes/configs/**/*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_recipe_config_loads_for_every_stage(path):
    for cls in (EmbedConfig, TokenizeConfig, SFTStageConfig, EvaluateConfig, DPOStageConfig):
        config_from_sources(cls, path)


def test_ranked_lists_must_reach_every_cut_off(tmp_path):
    """A ranked list holds beam_size items: Recall/NDCG@K past it would be those at beam_size under K's name; and a
    run's tables report @5 and @10."""
    with pytest.raises(ConfigError, match="beam_size=5 is below the largest cut-off K=10"):
        EvaluateConfig(beam_size=5).validate()
    EvaluateConfig(beam_size=5, ks=[1, 5]).validate()
    with pytest.raises(ConfigError, match="valid_beam_size=8: must be >= 10"):
        SFTStageConfig(valid_beam_size=8).validate()
    path = tmp_path / "run.yaml"
    path.write_text("evaluate:\n  ks: [10, 20]\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: evaluate\.ks=\[10, 20\] lacks \[5\]"):
        load_pipeline_config(path)
    path.write_text("evaluate:\n  ks: [5, 10, 20]\n  beam_size: 20\n")
    assert load_pipeline_config(path).evaluate.ks == [5, 10, 20]


def test_a_stage_command_refuses_a_misspelt_section_and_reads_a_flat_file_of_mappings(tmp_path):
    assert SECTION_NAMES == tuple(SECTIONS)
    path = tmp_path / "run.yaml"
    path.write_text("stf:\n  learning_rate: 0.5\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown section 'stf' .*; did you mean sft\?"):
        config_from_sources(SFTStageConfig, path)
    path.write_text("dpo:\n  beta: 0.2\nevalute:\n  beam_size: 30\n")  # beside the stage's own section too
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown section 'evalute' .*; did you mean evaluate\?"):
        config_from_sources(DPOStageConfig, path)
    path.write_text("hamr_options: {radius: 2}\n")  # a flat file whose options are all mappings
    assert config_from_sources(TokenizeConfig, path).hamr_options == {"radius": 2}


def test_option_mappings_and_choices_are_checked_when_read(tmp_path):
    """A regulariser's options are converted and checked like a section's; dtype and the schedule take their
    choices."""
    path = tmp_path / "run.yaml"
    path.write_text("tokenize:\n  unisid_options: {learning_rate: 1e-3, temperature: '5e-2'}\n")
    assert config_from_sources(TokenizeConfig, path).unisid_options == {"learning_rate": 0.001, "temperature": 0.05}
    for text, pattern in [
        ("tokenize:\n  unisid_options: {epochs: 2.5}\n", r"unisid_options: epochs=2\.5: expected int"),
        ("tokenize:\n  hamr_options: {radius: abc}\n", r"hamr_options: radius='abc'"),
        ("tokenize:\n  das_options: {temprature: 0.5}\n", r"DASConfig has no option 'temprature'; did you mean"),
        ("evaluate:\n  dtype: bogus\n", r"dtype='bogus'"),
        ("sft:\n  lr_scheduler_type: bogus\n", r"lr_scheduler_type='bogus'"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=pattern):
            load_pipeline_config(path)


@pytest.mark.parametrize(
    ("cls", "options", "pattern"),
    [
        (SFTStageConfig, {"num_train_epochs": 0}, r"num_train_epochs=0: must be > 0"),
        (SFTStageConfig, {"learning_rate": -1e-3}, r"learning_rate=-0\.001: must be >= 0"),
        (SFTStageConfig, {"save_steps": 0}, r"save_steps=0: must be >= 1"),
        (SFTStageConfig, {"max_steps": 0}, r"max_steps=0: must be >= 1, or -1"),
        (SFTStageConfig, {"lora_dropout": 1.5}, r"lora_dropout=1\.5: must be in \[0, 1\)"),
        (SFTStageConfig, {"lora_target_modules": []}, r"lora_target_modules is empty"),
        (DPOStageConfig, {"shared_prompt_forward": "cache", "gradient_checkpointing": True}, r"'cache' repeats"),
        (DPOStageConfig, {"medium_min": 3, "hard_min": 1}, r"need 0 < medium_min <= hard_min < levels"),
        (DPOStageConfig, {"hard_share": 0.6, "medium_share": 0.5}, r"hard_share \+ medium_share < 1"),
        (DPOStageConfig, {"training_args": {"max_length": 32}}, r"'max_length' cannot be set here"),
        (EmbedConfig, {"cf_negatives": 0}, r"cf_negatives=0: must be >= 1"),
        (EmbedConfig, {"cf_patience": 0}, r"cf_patience=0: must be >= 1"),
        (EmbedConfig, {"cf_patience": -2}, r"cf_patience=-2: must be >= 1"),
        (EmbedConfig, {"cf_lr": -1e-3}, r"cf_lr=-0\.001: must be > 0"),
        (EmbedConfig, {"cf_dropout": 1.5}, r"cf_dropout=1\.5: must be in \[0, 1\)"),
        (TokenizeConfig, {"auc_negatives": 0}, r"auc_negatives=0: must be >= 1"),
        (TokenizeConfig, {"phase2_epochs": -1}, r"phase2_epochs=-1: must be >= 0"),
        (TokenizeConfig, {"lr": -1e-3}, r"lr=-0\.001: must be > 0"),
        (TokenizeConfig, {"hidden_dims": [-4]}, r"hidden_dims=\[-4\]: every layer size must be >= 1"),
        (EvaluateConfig, {"decoder": "generate", "beam_size": 1, "ks": [1]}, r"'generate' needs beam_size >= 2"),
        (DPOStageConfig, {"beta": float("nan")}, r"beta=nan: must be > 0"),
        (DPOStageConfig, {"sft_weight": float("nan")}, r"sft_weight=nan: must be >= 0"),
        (TokenizeConfig, {"beta": float("nan")}, r"beta=nan: must be >= 0 \(a finite number\)"),
        (TokenizeConfig, {"lr": float("inf")}, r"lr=inf: must be > 0 \(a finite number\)"),
        (SFTStageConfig, {"learning_rate": float("nan")}, r"learning_rate=nan: must be >= 0"),
        (TokenizeConfig, {"das_options": {"temperature": 0.0}}, r"DAS temperature=0\.0: must be > 0"),
        (TokenizeConfig, {"das_options": {"beta": -1.0}}, r"DAS beta=-1\.0: must be >= 0"),
        (TokenizeConfig, {"hamr_options": {"eps": 0.0}}, r"HaMR eps=0\.0: must be > 0"),
        (TokenizeConfig, {"hamr_options": {"lambda_full": -0.2}}, r"HaMR lambda_full=-0\.2: must be >= 0"),
        (TokenizeConfig, {"adasid_options": {"t_start": 10, "t_end": 10}}, r"0 <= t_start < t_end"),
        (TokenizeConfig, {"adasid_options": {"m_partial": 0.5}}, r"m_partial=0\.5 can never act: .* above 0\.76"),
        (TokenizeConfig, {"adasid_options": {"m_full": 0.7}}, r"m_full=0\.7 can never act: .* above 0\.70"),
    ],
)
def test_options_that_cannot_train_are_refused_before_any_work(cls, options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        cls(**options).validate()


def test_guard_metrics_are_checked_against_the_runs_cut_offs(tmp_path):
    config = DPOStageConfig(guard=True, guard_metrics=["recall@20"])
    config.validate()  # the dpo section alone: the evaluate section's ks are not known yet
    assert config.valid_evaluation(EvaluateConfig(ks=[5, 20])).ks == [5, 20]
    texts = EvaluateConfig(ks=[5, 20], text_examples=3, max_new_tokens=9)  # a ranking check writes no texts
    assert config.valid_evaluation(texts) == config.valid_evaluation(EvaluateConfig(ks=[5, 20]))
    with pytest.raises(ConfigError, match=r"'recall@20' is not a valid-split metric"):
        config.valid_evaluation(EvaluateConfig())
    with pytest.raises(ConfigError, match=r"'hit@10' is not a valid-split metric"):
        DPOStageConfig(guard_metrics=["hit@10"]).validate()
    path = tmp_path / "run.yaml"  # the pipeline checks it with the evaluate section's ks before any step
    path.write_text("dpo:\n  guard: true\n  guard_metrics: [recall@20]\n")
    with pytest.raises(ConfigError, match=r"^\S+run\.yaml, section 'dpo': .*'recall@20' is not a valid-split"):
        load_pipeline_config(path)
    path.write_text("dpo:\n  guard: true\n  guard_metrics: [recall@20]\nevaluate:\n  ks: [5, 10, 20]\n")
    assert load_pipeline_config(path).dpo.guard_metrics == ["recall@20"]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="a LoRA adapter folder, not a full model"):
        require_full_model(adapter, "model")


def test_an_invalid_value_is_named_with_where_it_came_from(tmp_path):
    """`validate()`'s errors carry the file and section, or the flags, that gave the values: sft and dpo share
    option names."""
    path = tmp_path / "run.yaml"
    path.write_text("sft:\n  learning_rate: -1\n")
    with pytest.raises(ConfigError, match=r"^\S+run\.yaml, section 'sft': learning_rate=-1: must be >= 0"):
        config_from_sources(SFTStageConfig, path)
    with pytest.raises(ConfigError, match=r"^\S+run\.yaml, section 'sft': learning_rate=-1: must be >= 0"):
        load_pipeline_config(path)
    with pytest.raises(ConfigError, match=r"^the flags: learning_rate=-1: must be >= 0"):
        config_from_sources(DPOStageConfig, path, {"learning_rate": "-1"})
    path.write_text("sft:\n  num_train_epochs: 0\n")
    with pytest.raises(ConfigError, match=r"run\.yaml, section 'sft' and the flags: learning_rate=-1: must be >= 0"):
        config_from_sources(SFTStageConfig, path, {"learning_rate": "-1", "num_train_epochs": "1"})


def test_an_empty_section_is_empty_and_a_section_of_another_kind_is_refused(tmp_path):
    """`dpo:` with its options commented out holds nothing (YAML null), not a flat file's options; a section that is
    a list is an error naming the file and the section."""
    path = tmp_path / "run.yaml"
    path.write_text("source:\n  builder: movielens\ndpo:\n  # beta: 0.3\n")
    config = load_pipeline_config(path)
    assert config.dpo == DPOStageConfig() and config.source.builder == "movielens"
    assert config_from_sources(DPOStageConfig, path) == DPOStageConfig()
    path.write_text("dpo:\n")
    assert load_pipeline_config(path).dpo == DPOStageConfig()
    path.write_text("sft:\n  max_steps: 3\ndpo: [sp_easy]\n")
    for read in (load_pipeline_config, lambda p: config_from_sources(SFTStageConfig, p)):
        with pytest.raises(ConfigError, match=r"run\.yaml: section 'dpo': expected a mapping, got list$"):
            read(path)
    path.write_text("source: recbole\nbuilder: movielens\n")  # a flat file of `data build`: `source` is an option
    assert config_from_sources(SourceConfig, path).source == "recbole"


def test_help_lists_each_option_mapping_with_its_keys_and_defaults(capsys):
    """Option mappings have no flags (they are set in the YAML): `--help` names each, with its class's keys and
    defaults, so a user can write `hamr_options: {radius: 2}` without reading the source."""
    from align3gr.cli import main

    with pytest.raises(SystemExit):
        main(["tokenize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, target in (("hamr_options", "HaMRConfig"), ("unisid_options", "UniSIDConfig")):
        assert f"YAML only: {name}, {target} fields (YAML)" in text and f"Its keys and {target}'s defaults:" in text
    assert "radius=1, m_full=0.8" in text and "m_full=1.0, m_partial=1.0" in text
    assert "t_start/t_end count phase-2 optimiser steps" in text


def test_a_section_given_twice_and_a_file_not_in_utf8_are_named(tmp_path):
    """YAML keeps the last of a repeated key silently, which would drop every option of the first section."""
    path = tmp_path / "run.yaml"
    path.write_text("sft:\n  learning_rate: 0.5\ndpo:\n  beta: 0.1\nsft:\n  learning_rate: 0.001\n")
    with pytest.raises(ConfigError, match=r"(?s)run\.yaml: malformed YAML: .*key 'sft' given twice.*line 5"):
        load_pipeline_config(path)
    path.write_text("sft:\n  learning_rate: 0.5\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"key 'learning_rate' given twice"):
        config_from_sources(SFTStageConfig, path)
    path.write_bytes("sft:\n  # caf\u00e9\n  learning_rate: 0.5\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"run\.yaml: not UTF-8 text \(byte 12: invalid continuation byte\)"):
        load_pipeline_config(path)


def test_help_shows_each_flags_default(capsys):
    """The README says `--help` lists every option with its default."""
    from align3gr.cli import main

    with pytest.raises(SystemExit):
        main(["sft", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "AdamW peak learning rate (Align3GR's SFT: 1e-3, 5e-4 or 1e-4). (default: 0.001)" in text
    assert "(default: off)" in text and "(default: unset)" in text and "(default: seq,item_align," in text
