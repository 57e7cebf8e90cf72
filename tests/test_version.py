"""`align3gr --version`: the package's version and those of the libraries it trains with, one per line."""

from __future__ import annotations

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
