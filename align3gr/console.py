"""Terminal output shared by every command: logging set-up and the summary tables printed at the end."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tqdm import tqdm


class Report(Protocol):
    """What a stage (or `push`) returns: `render` gives the text its command prints ("" on processes that print
    nothing)."""

    def render(self) -> str: ...


# bitsandbytes warns on import, on CPUs with AVX512-BF16, that it could not fetch an optional 4-bit kernel from the
# Hub and asks for `pip install kernels`; its own fallback runs QLoRA, and the Hub is off limits offline.
HUB_KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"


def quiet_hub_kernel_warning() -> None:
    """Silence bitsandbytes' warning about its optional Hub kernel; called before anything imports bitsandbytes
    (building the parser does, through transformers)."""
    logging.getLogger(HUB_KERNEL_LOGGER).setLevel(logging.ERROR)


def setup_logging(verbose: bool = False) -> None:
    """Concise `level: message` logging; libraries' own INFO chatter stays quiet unless verbose."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress_bar(**options: Any) -> tqdm:
    """A tqdm bar that shows only on a terminal and while align3gr logs at INFO (hidden under quieter logging,
    e.g. in a library that never set logging up), so piped and logged output carries no bar."""
    from tqdm.auto import tqdm

    quiet = not logging.getLogger("align3gr").isEnabledFor(logging.INFO)
    return tqdm(disable=True if quiet else None, **options)


def format_value(value: object) -> str:
    if isinstance(value, float):
        return (f"{value:.4f}".rstrip("0").rstrip(".") or "0") if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, object]], title: str | None = None) -> str:
    """A plain-text table with one column per key of the first row, numbers right-aligned."""
    if not rows:
        return title or ""
    columns = list(rows[0])
    cells = [[format_value(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), int | float) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))

    out = [title] if title else []
    out += [line(columns), "  ".join("-" * w for w in widths), *(line(r) for r in cells)]
    return "\n".join(out)


def markdown_table(header: list[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, numbers formatted as the CLI prints them."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(format_value(v) for v in row) + " |" for row in rows)])


def format_mapping(values: Mapping[str, object], title: str | None = None) -> str:
    """A two-column `name  value` table."""
    return format_table([{"statistic": k, "value": v} for k, v in values.items()], title)
