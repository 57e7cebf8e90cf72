"""`align3gr --version`: the package's version and those of the libraries it trains with, one per line."""

from __future__ import annotations

import signal
import subprocess
import sys
from importlib.metadata import version

import pytest
from transformers import SchedulerType

import align3gr
from align3gr.cli import main


def test_version_prints_the_package_and_library_versions(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"align3gr {align3gr.__version__}"
    assert lines[1:] == [f"{name} {version(name)}" for name in ("torch", "transformers", "trl", "peft")]


def test_the_module_version_is_the_installed_package_version():
    assert align3gr.__version__ == version("align3gr")


def test_a_command_that_imports_bitsandbytes_prints_no_library_warning(tmp_path):
    """Checking an SFT config imports bitsandbytes (transformers' schedules import peft, which imports it); its
    warning about an optional Hub kernel must not reach the user, here one whose only message is the config error."""
    done = subprocess.run(
        [sys.executable, "-m", "align3gr.cli", "sft", "--data", str(tmp_path), "--scid", str(tmp_path),
         "--out", str(tmp_path / "sft"), "--lr-scheduler-type", "bogus"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and not (tmp_path / "sft").exists()
    assert done.stderr.splitlines() == [
        "error: the flags: lr_scheduler_type='bogus': expected one of " + ", ".join(s.value for s in SchedulerType)
    ]


@pytest.mark.parametrize(
    ("argv", "libraries"),
    [
        (["--help"], []),
        (["data", "build", "--help"], ["numpy"]),
        (["compare", "--help"], []),
        (["evaluate", "--help"], []),
        (["sft", "--help"], ["numpy"]),
        (["dpo", "--help"], []),
    ],
)
def test_a_command_line_imports_only_what_its_command_needs(argv, libraries):
    """Only the named command's options are built, and they name their choices without importing the libraries that
    use them: no command's options import torch, transformers, peft, trl, datasets, bitsandbytes or deepspeed; `data`
    and `sft` import numpy (through `align3gr.data`'s builders), the others not even that."""
    code = (
        "import sys\nfrom align3gr.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'transformers', 'peft', 'trl', 'datasets', 'bitsandbytes', 'deepspeed', 'numpy')\n"
        "print(','.join(name for name in heavy if name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1].split(",") == (libraries or [""])


def test_output_piped_into_a_reader_that_leaves_ends_quietly(ml100k_small):
    """`align3gr data stats ... | head -1`: the reader closes the pipe before the statistics are printed; the command
    ends with SIGPIPE's status and no traceback."""
    command = [sys.executable, "-m", "align3gr.cli", "data", "stats", str(ml100k_small)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the statistics are loaded and printed
    assert child.wait(timeout=300) == 128 + signal.SIGPIPE
    assert b"Traceback" not in child.stderr.read()
