"""Tracepoint formats from the running kernel's tracefs.

BPF programs on tracepoints read their context at the offsets the format
file gives; reading the formats here (instead of trusting headers) keeps the
programs right on any kernel, and tells which tracepoints exist at all.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from podflame.symbolizer.text import decode

# tracefs is mounted at /sys/kernel/tracing on current kernels, and under
# debugfs on older ones.
TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

_FIELD = re.compile(
    r"field:[^;]*?(?P<name>\w+)(?:\[\d*\])?;\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
)


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int


def events_root(roots: tuple[Path, ...] = TRACEFS_ROOTS) -> Path | None:
    """The tracefs `events` folder, or None when tracefs is not mounted."""
    for root in roots:
        if (root / "events").is_dir():
            return root / "events"
    return None


def tracepoint_fields(events: Path, tracepoint: str) -> list[Field] | None:
    """Fields of `category:name`, in order; None when the tracepoint does not exist."""
    category, _, name = tracepoint.partition(":")
    try:
        text = decode((events / category / name / "format").read_bytes())
    except OSError:
        return None
    return [Field(m["name"], int(m["offset"]), int(m["size"])) for m in _FIELD.finditer(text)]
