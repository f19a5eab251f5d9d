"""BPF C sources, shipped as package data and compiled by BCC at run time."""

from importlib.resources import files
from pathlib import Path


def source_path(name: str) -> Path:
    """Path of the BPF C file `name` (for `BPF(src_file=...)`)."""
    path = Path(str(files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"BPF source {name!r} not found at {path}")
    return path
