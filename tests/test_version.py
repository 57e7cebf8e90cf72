"""`align3gr --version`: the package's version and those of the libraries it trains with, one per line."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

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


def test_help_prints_no_library_warning():
    """A stage's options import bitsandbytes (through transformers); its warning about an optional Hub kernel must
    not reach a user who only asked for help."""
    done = subprocess.run(
        [sys.executable, "-m", "align3gr.cli", "sft", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: align3gr sft" in done.stdout and "--lr-scheduler-type" in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("argv", "libraries"),
    [
        (["--help"], []),
        (["data", "build", "--help"], []),
        (["compare", "--help"], []),
        (["evaluate", "--help"], ["torch", "transformers"]),
    ],
)
def test_a_command_line_imports_only_what_its_command_needs(argv, libraries):
    """Only the named command's options are built: the list of commands, `data` and `compare` (which reads
    finished runs) import neither torch nor transformers, and an evaluation's options (which each process of a launched evaluation reads first) not peft,
    trl, bitsandbytes or deepspeed."""
    code = (
        "import sys\nfrom align3gr.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'transformers', 'peft', 'trl', 'bitsandbytes', 'deepspeed')\n"
        "print(','.join(name for name in heavy if name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1].split(",") == (libraries or [""])
