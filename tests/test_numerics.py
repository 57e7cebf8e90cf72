"""What decides a result's float bits besides seed and config (threads, CPU instruction set, accelerator): recorded
with each stage's output, and a resume under other numerics than its run started with is warned about."""

from __future__ import annotations

import json
import logging

import torch

from align3gr.devices import numerics
from align3gr.stage_output import NUMERICS_FILE, StageOutput


def test_numerics_name_threads_and_instruction_set():
    found = numerics()
    assert found["torch_threads"] == torch.get_num_threads()
    assert found["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert found["torch"] == torch.__version__


def test_a_resume_under_other_numerics_is_warned_about(tmp_path, caplog):
    output = StageOutput(tmp_path / "sft")
    assert output.resume("run-a") is None
    assert json.loads((output.work / NUMERICS_FILE).read_text()) == numerics()
    checkpoint = output.work / "checkpoint-4"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        assert output.resume("run-a") == str(checkpoint)
    assert "other numerics" not in caplog.text  # the same machine and threads: resumed without a word
    started = {**numerics(), "torch_threads": numerics()["torch_threads"] + 1}
    (output.work / NUMERICS_FILE).write_text(json.dumps(started))
    with caplog.at_level(logging.WARNING):
        assert output.resume("run-a") == str(checkpoint)
    assert "resuming under other numerics than the run started with" in caplog.text
    assert f"'torch_threads': {started['torch_threads']}" in caplog.text
    assert output.resume("run-b") is None  # another run: a fresh work folder, this process's numerics
    assert json.loads((output.work / NUMERICS_FILE).read_text()) == numerics()
