"""read_named_symbols: data symbols of any type, found by name; damaged files fail only
with ElfError."""

import contextlib
import io
import random
import shutil
from pathlib import Path

import pytest

from podflame.symbolizer.elf import ElfError, read_named_symbols

TRUE = Path(shutil.which("true") or "/bin/true")


def test_finds_defined_data_symbols_and_leaves_out_the_rest() -> None:
    """coreutils' true copies glibc's program name variables: two names, one address."""
    names = frozenset({"__progname", "program_invocation_short_name", "no_such_symbol"})
    with open(TRUE, "rb") as stream:
        found = read_named_symbols(stream, names)
    assert set(found.values) == names - {"no_such_symbol"}
    assert found.values["__progname"] == found.values["program_invocation_short_name"] > 0
    assert found.segments


def test_damaged_files_raise_only_elf_error() -> None:
    data = TRUE.read_bytes()
    rng = random.Random(15)
    for _ in range(60):
        damaged = bytearray(data[: rng.randrange(16, len(data))])
        for _ in range(rng.randrange(1, 40)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        with contextlib.suppress(ElfError):  # anything else fails the test
            read_named_symbols(io.BytesIO(bytes(damaged)), frozenset({"_PyRuntime"}))
    with pytest.raises(ElfError):
        read_named_symbols(io.BytesIO(b"\x7fELF" + bytes(60)), frozenset({"x"}))
