"""The command that starts an `accelerate launch` of two CPU processes in a test. Each launch rendezvouses on a port
free at the time, not on accelerate's default 29500, so launches in parallel test workers (pytest-xdist) never meet."""

from __future__ import annotations

import socket
import sys


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launch(*flags: str) -> list[str]:
    """`python -m accelerate.commands.launch` on 2 processes and a free port, then `flags` (launch flags, script, its
    arguments)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(free_port()),
            "--num_processes", "2", *flags]  # fmt: skip
