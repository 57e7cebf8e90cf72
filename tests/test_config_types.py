"""Typed configs: every YAML value and flag converted to its field's type, or refused before any work with the file,
section, option, value and expected type (issue 16)."""

from __future__ import annotations

import pytest

from align3gr.cli import build_parser, main
from align3gr.config import config_from_sources
from align3gr.dpo.config import DPOStageConfig
from align3gr.errors import ConfigError
from align3gr.evaluate.config import EvaluateConfig
from align3gr.pipeline import run_pipeline
from align3gr.sft.config import SFTStageConfig
from align3gr.tokenize.config import TokenizeConfig


def _sft(tmp_path, text: str) -> SFTStageConfig:
    path = tmp_path / "c.yaml"
    path.write_text("sft:\n" + "".join(f"  {line}\n" for line in text.splitlines()))
    return config_from_sources(SFTStageConfig, path)


def test_values_are_converted_to_the_fields_types(tmp_path):
    config = _sft(
        tmp_path, 'learning_rate: 1e-3\nmax_steps: "150"\nwarmup_steps: 10\nuse_lora: "Yes"\ntasks: seq,intention'
    )
    assert config.learning_rate == 0.001 and isinstance(config.learning_rate, float)
    assert config.max_steps == 150 and isinstance(config.max_steps, int)
    assert config.warmup_steps == 10 and isinstance(config.warmup_steps, int)  # an int stays an int in a float field
    assert config.use_lora is True
    assert config.tasks == ["seq", "intention"]
    assert _sft(tmp_path, "bf16: null\nearly_stopping_patience: null").bf16 is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("learning_rate: abc", "learning_rate='abc': expected float"),
        ("per_device_train_batch_size: 32.5", "per_device_train_batch_size=32.5: expected int"),
        ("max_steps: true", "max_steps=True: expected int"),
        ("max_steps: '1.5'", "max_steps='1.5': expected int"),
        ("use_lora: maybe", "use_lora='maybe': expected bool"),
        ("use_lora: null", "use_lora=None: expected bool"),
        ("model: 7", "model=7: expected str"),
        ("max_examples_per_task: many", "max_examples_per_task='many': expected int or null"),
        ("tasks: {seq: 1}", r"tasks=\{'seq': 1\}: expected a list of str"),
        ("lora_target_modules: [q_proj, 3]", r"lora_target_modules=\['q_proj', 3\]: 3 in the list: expected str"),
    ],
)
def test_a_bad_value_names_the_file_section_option_value_and_type(tmp_path, line, message):
    with pytest.raises(ConfigError, match=rf"c\.yaml, section 'sft': {message}"):
        _sft(tmp_path, line)


def test_a_flat_file_is_named_without_a_section(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("max_steps: many\n")
    with pytest.raises(ConfigError, match=r"sft\.yaml: max_steps='many': expected int$"):
        config_from_sources(SFTStageConfig, path)


def test_choices_are_checked_when_the_config_is_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("evaluate:\n  split: dev\ntokenize:\n  item_tokenizer: rq\ndpo:\n  stages: [sp_easy, sp_hardest]\n")
    with pytest.raises(ConfigError, match="section 'evaluate': split='dev': expected one of valid, test"):
        config_from_sources(EvaluateConfig, path)
    with pytest.raises(ConfigError, match="item_tokenizer='rq': expected one of dual, unisid"):
        config_from_sources(TokenizeConfig, path)
    with pytest.raises(ConfigError, match="'sp_hardest' in the list: expected one of sp_easy, sp_medium"):
        config_from_sources(DPOStageConfig, path)


def test_list_options_are_flags_converted_as_yaml_values():
    parser = build_parser()
    evaluate = parser.parse_args(["evaluate", "--model", "m", "--data", "d", "--out", "o", "--ks", "5,10,20"])
    assert config_from_sources(EvaluateConfig, overrides={"ks": evaluate.ks}).ks == [5, 10, 20]
    dpo = parser.parse_args(["dpo", "--data", "d", "--start", "s", "--out", "o", "--stages", "sp_easy, rf_hard"])
    assert config_from_sources(DPOStageConfig, overrides={"stages": dpo.stages}).stages == ["sp_easy", "rf_hard"]
    sft = parser.parse_args(["sft", "--data", "d", "--scid", "s", "--out", "o", "--tasks", "seq", "--lr-scheduler-type",
                             "linear", "--learning-rate", "2e-5"])  # fmt: skip
    config = config_from_sources(SFTStageConfig, overrides={"tasks": sft.tasks, "learning_rate": sft.learning_rate})
    assert (config.tasks, config.learning_rate) == (["seq"], 2e-5)


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "build", "--out", "o", "--builder", "amazon", "--user-k", "3", "--option", "reviews=r.json"],
        ["sft", "--data", "d", "--scid", "s", "--out", "o", "--tasks", "seq", "--learning-rate", "2e-5"],
        ["evaluate", "--model", "m", "--data", "d", "--out", "o", "--ks", "5,10", "--no-exclude-history"],
        ["dpo", "--data", "d", "--start", "s", "--out", "o", "--stages", "sp_easy", "--eval-dir", "e"],
        ["compare", "a", "b", "--test", "wilcoxon", "--unit", "seeds"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_command_reads_the_same_with_only_its_own_options_built(argv):
    """`main` builds the options of the command it is given only; the values and configs read are those of the
    parser of every command."""
    full, scoped = build_parser().parse_args(argv), build_parser({argv[0]}).parse_args(argv)
    assert {k: v for k, v in vars(scoped).items() if k != "configure"} == {
        k: v for k, v in vars(full).items() if k != "configure"
    }
    if hasattr(full, "configure"):
        assert scoped.configure(scoped) == full.configure(full)


def test_help_lists_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["dpo", "--help"])
    text = capsys.readouterr().out
    assert "--stages {sp_easy,sp_medium,sp_hard,sp_mixed,sp_random,rf_easy,rf_hard,rf_mixed},..." in text
    assert "--bucketing {prefix,similarity}" in text and "--ks" not in text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate", "abc"], "--learning-rate 'abc': expected float"),
        (["--max-steps", "32.5"], "--max-steps '32.5': expected int"),
        (["--tasks", "seq,B3"], "--tasks 'seq,B3': 'B3' in the list: expected one of seq"),
        (["--dtype", "float8"], "--dtype 'float8': expected one of auto, float32"),
    ],
)
def test_a_bad_flag_stops_the_command_before_any_work(tmp_path, capsys, flags, message):
    out = tmp_path / "sft"
    argv = ["sft", "--data", str(tmp_path / "data"), "--scid", str(tmp_path / "scid"), "--out", str(out), *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())  # no lock, no work folder


def test_a_bad_pipeline_value_stops_it_before_the_run_folder_is_made(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  user_k: 5\nsft:\n  learning_rate: abc\n")
    run = tmp_path / "runs" / "bad"
    with pytest.raises(ConfigError, match=r"bad\.yaml, section 'sft': learning_rate='abc': expected float"):
        run_pipeline(path, run)
    assert not run.exists() and not (tmp_path / "runs").exists()
