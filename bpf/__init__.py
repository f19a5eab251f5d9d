"""BPF C sources, shipped as package data and compiled by BCC at run time."""

import re
from importlib.resources import files
from pathlib import Path


def source_path(name: str) -> Path:
    """Path of the BPF C file `name` (its text, headers inlined: `source_text`)."""
    path = Path(str(files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"BPF source {name!r} not found at {path}")
    return path


_LOCAL_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_]+\.h)"[^\n]*$', re.MULTILINE)


def source_text(name: str) -> str:
    """The BPF C file `name` with its own headers (`#include "x.h"` of this folder) inlined.

    BCC rewrites map calls (`table.lookup(...)`) only in the main source, not in
    included files, so a header that uses maps must become part of it.
    """
    path = source_path(name)

    def inline(match: re.Match[str]) -> str:
        return source_path(match.group(1)).read_text()

    return _LOCAL_INCLUDE.sub(inline, path.read_text())
