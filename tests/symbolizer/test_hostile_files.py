"""Regressions from fuzzing the symbolizer: files a container controls must not hang,
redirect or stall it.

- A FIFO where a mapped library was: open() blocked forever (and the agent with it).
- A symbolic link there: followed against the agent's root, it named frames from a
  host file.
- A .gnu_debuglink among thousands of sections pyelftools could not build: lost.
- Many aliases of one address sharing a long name: the name comparison took 40 s
  for a 2.4 MB file; it now stops at a budget of compared words linear in the table.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from podflame.symbolizer import Symbolizer, functions
from podflame.symbolizer.debuginfo import crc_matches, read_debuglink
from podflame.symbolizer.elf import ElfSymbols
from podflame.symbolizer.symbolizer import fallback_frame
from tests.symbolizer import elfgen
from tests.symbolizer.elfgen import Section, Symbol
from tests.symbolizer.fakeproc import MODULE, PID, START, FakeProc

# How long a call may take before it counts as hung: generous, it should return at once.
HANG_SECONDS = 20


def finishes(call: Callable[[], object], fifo: Path) -> object:
    """Run `call` in a thread; fail (and unblock it through the FIFO) if it hangs."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as error:  # re-raised in the caller's thread
            result.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_SECONDS)
    if thread.is_alive():
        # A writer releases an open() blocked on the FIFO, so the thread can end.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(HANG_SECONDS)
        pytest.fail(f"blocked on the FIFO {fifo}")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def test_a_fifo_where_the_library_was_does_not_block(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path / "proc")
    proc.install(b"placeholder")
    path = proc.in_root(MODULE)
    path.unlink()
    os.mkfifo(path)
    # Even with the mapping's inode (which the file system may well reuse).
    maps = proc.directory / str(PID) / "maps"
    maps.write_text(f"{START:x}-{START + 0x10000:x} r-xp 0 08:01 {path.stat().st_ino} {MODULE}\n")
    symbolizer = Symbolizer(proc=proc.directory)

    names = finishes(lambda: symbolizer.user(PID, [START + 0x1000]), path)

    assert names == [fallback_frame(MODULE, 0x1000)]
    assert symbolizer.stats.binaries_unreadable == 1


def test_debug_file_helpers_refuse_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "lib.debug"
    os.mkfifo(fifo)
    assert finishes(lambda: crc_matches(fifo, 0), fifo) is False
    with pytest.raises(OSError):
        finishes(lambda: ElfSymbols.from_path(fifo), fifo)


def test_a_symlink_where_the_library_was_is_not_followed(tmp_path: Path) -> None:
    """The link points at a host file with the mapping's very inode: still not read."""
    host_file = tmp_path / "host-library.so"
    host_file.write_bytes(elfgen.library().layout().bytes())
    proc = FakeProc(tmp_path / "proc")
    proc.install(b"placeholder")
    path = proc.in_root(MODULE)
    path.unlink()
    path.symlink_to(host_file)
    maps = proc.directory / str(PID) / "maps"
    maps.write_text(
        f"{START:x}-{START + 0x10000:x} r-xp 00000000 08:01 {host_file.stat().st_ino} {MODULE}\n"
    )
    symbolizer = Symbolizer(proc=proc.directory)

    assert symbolizer.user(PID, [START + 0x1000]) == [fallback_frame(MODULE, 0x1000)]
    assert symbolizer.stats.binaries_unreadable == 1


def test_aliases_sharing_a_long_name_cost_a_bounded_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100,000 aliases over 100 addresses, all named by one 9,000-byte name: before the
    budget, every round compared every alias, 1024 rounds (about 10**8 words); now the
    work is linear in the size of the table."""
    compared = [0]
    name_words = functions._name_words

    def counting(text: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        compared[0] += len(at)
        return name_words(text, at)

    monkeypatch.setattr(functions, "_name_words", counting)
    lib = elfgen.library()
    lib.section(".strtab").data = b"\0" + b"a" * 9000 + b"\0"
    aliases = [Symbol(1, 0x1000 + (i // 1000) * 0x10, 0x10, 2) for i in range(100_000)]
    lib.section(".symtab").data = elfgen.symtab(aliases)
    layout = lib.layout()
    symbols = ElfSymbols.from_file(io.BytesIO(layout.bytes()))

    assert 0 < compared[0] <= functions.compared_words_budget(100_000)
    assert len(symbols) == 100
    assert symbols.lookup(0x1000 + 0x10 * 42) == "a" * 9000


@pytest.mark.parametrize("kind", [elfgen.SHT_SYMTAB, 6, 0x6FFFFFF6])  # SYMTAB, DYNAMIC, GNU_HASH
def test_debuglink_is_found_among_thousands_of_odd_sections(kind: int) -> None:
    """pyelftools built an object per section to find one by name (seconds here) and
    gave up on the first it could not build: the link was lost."""
    lib = elfgen.library(link=elfgen.debuglink(b"x.debug", 7))
    lib.sections += [Section(f".s{i}", kind, bytes(64), entsize=24, link=3) for i in range(5000)]
    assert read_debuglink(io.BytesIO(lib.layout().bytes())) == ("x.debug", 7)
