"""Where the `embed` and `tokenize` stages compute: their `device` option, checked when the config is read
(`check_device`) and resolved when the stage runs (`stage_device`): `auto` is the machine's accelerator
(`torch.accelerator`: CUDA, MPS, XPU, ...) when it has one, else the CPU.

The option picks where a stage computes, not what: random draws come from CPU generators whatever the device, and
results come back to the CPU before they are written. On the CPU `auto` and `cpu` give the same bytes; an
accelerator rounds differently, within float tolerance. So the option stays out of what decides whether a step's
output is current and which folder it goes to (`device_field`'s `fingerprint`, `align3gr.config.fingerprint_options`).
"""

from __future__ import annotations

import logging
from dataclasses import field
from typing import Any

import torch

from align3gr.errors import ConfigError

log = logging.getLogger(__name__)
AUTO = "auto"
ACCELERATOR_TYPES = ("cuda", "mps", "xpu", "mtia", "hpu")
"""Device types a `device` option may name besides `cpu` (and the machine's own accelerator type, if another)."""


def _known_types() -> tuple[str, ...]:
    current = torch.accelerator.current_accelerator()
    return ("cpu", *ACCELERATOR_TYPES, *([current.type] if current and current.type not in ACCELERATOR_TYPES else []))


def check_device(cls: type, value: str, where: str) -> str:
    """The `check` of a `device` field (`align3gr.config.convert_value`): `auto`, or a device type among
    `_known_types` with an optional index (`cuda:1`); otherwise a `ConfigError` naming `where` (the file, section
    and option, or the flag), the value and what is expected."""
    if value == AUTO:
        return value
    try:
        device_type = torch.device(value).type
    except RuntimeError:
        device_type = None
    if device_type not in _known_types():
        raise ConfigError(
            f"{where}={value!r}: expected {AUTO} (the accelerator if there is one, else the CPU) or a device: "
            f"{', '.join(_known_types())}, with an optional index (cuda:1)"
        )
    return value


def device_field(help_text: str, fingerprint: Any) -> Any:
    """A `device` option (default `auto`), checked by `check_device`; `fingerprint` is what step keys and lineages
    record for it (`align3gr.config.fingerprint_options`)."""
    return field(default=AUTO, metadata={"help": help_text, "check": check_device, "fingerprint": fingerprint})


def resolve_device(option: str) -> torch.device:
    """The device a `device` option names on this machine: `auto` the current accelerator or the CPU; a named one
    must exist here (a `ConfigError` otherwise)."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if option == AUTO:
        return accelerator or torch.device("cpu")
    device = torch.device(option)
    if device.type == "cpu":
        return device
    if accelerator is None or accelerator.type != device.type:
        raise ConfigError(f"device={option!r}: this machine has no {device.type} device (accelerator: {accelerator})")
    count = torch.accelerator.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device={option!r}: this machine has {count} {device.type} device(s)")
    return device


def stage_device(option: str, stage: str) -> torch.device:
    """`resolve_device`, and a log line saying which device the stage uses."""
    device = resolve_device(option)
    log.info("%s: computing on %s (device: %s)", stage, device, option)
    return device


def numerics() -> dict[str, Any]:
    """What decides a result's float bits besides seed and config, recorded beside each stage's output: torch's
    thread count and CPU instruction set, and the accelerator when there is one. Another value of any of them gives
    another draw of the same recipe (see the README), so two runs that disagree can be told apart by it."""
    accelerator = torch.accelerator.current_accelerator()
    found: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }
    if accelerator is not None:
        found["accelerator"] = accelerator.type
        if accelerator.type == "cuda":
            found["accelerator_name"] = torch.cuda.get_device_name()
    return found
