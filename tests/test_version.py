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
    """Building the parser imports bitsandbytes (through transformers); its warning about an optional Hub kernel
    must not reach a user who only asked for help."""
    done = subprocess.run(
        [sys.executable, "-m", "align3gr.cli", "ablate", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: align3gr ablate" in done.stdout
    assert done.stderr == ""
