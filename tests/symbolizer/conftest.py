"""Fixtures for the symbolizer tests: C programs compiled at test time and run live.

The programs (tests/fixtures/symbolizer/*.c) print the runtime addresses of
some of their functions and then block on stdin, so a test can symbolize those
addresses through the real /proc/PID/maps of a running process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parent.parent / "fixtures" / "symbolizer"
CFLAGS = ["-O0", "-fno-omit-frame-pointer", "-g0"]
# $ORIGIN: a copy of a program next to a copy of libburn.so finds that copy.
RPATH = "-Wl,-rpath,$ORIGIN"


@dataclass(frozen=True)
class Binaries:
    """Everything compiled once per session. `stripped/` holds stripped copies."""

    dir: Path
    lib: Path
    pie: Path
    nopie: Path
    mapper: Path
    unsized: Path
    stripped_dir: Path


@dataclass
class Live:
    """A running fixture program and the addresses it printed."""

    process: subprocess.Popen[str]
    addresses: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid


def _gcc(*args: str | Path) -> None:
    subprocess.run(["gcc", *CFLAGS, *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="session")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> Binaries:
    if shutil.which("gcc") is None or shutil.which("strip") is None:
        pytest.fail("gcc and strip are needed to build the test programs (scripts/install.sh)")
    out = tmp_path_factory.mktemp("symbolizer-bin")
    lib, pie, nopie = out / "libburn.so", out / "target_pie", out / "target_nopie"
    _gcc("-shared", "-fPIC", "-o", lib, SOURCES / "libburn.c")
    _gcc("-fPIE", "-pie", "-o", pie, SOURCES / "target.c", "-L", out, "-lburn", RPATH)
    _gcc("-no-pie", "-o", nopie, SOURCES / "target.c", "-L", out, "-lburn", RPATH)
    _gcc("-o", out / "mapper", SOURCES / "mapper.c", "-ldl")
    _gcc("-fno-toplevel-reorder", "-o", out / "unsized", SOURCES / "unsized.c")
    stripped = out / "stripped"
    stripped.mkdir()
    for name in ("libburn.so", "target_pie"):
        subprocess.run(["strip", "-o", stripped / name, out / name], check=True)
    return Binaries(out, lib, pie, nopie, out / "mapper", out / "unsized", stripped)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Live]]:
    """Start a fixture program; wait until it printed "ready"; stop it afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(*argv: str | Path) -> Live:
        process = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        live = Live(process)
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "ready":
                return live
            name, address = line.split()
            live.addresses[name] = int(address, 16)
        stderr = process.stderr.read() if process.stderr else ""
        raise AssertionError(f"{argv} exited early: {process.wait()} {stderr}")

    yield start
    for process in started:
        _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def module_offset() -> Callable[[int, int], str]:
    """The expected ``basename+0xOFFSET`` of an address, from a separate maps parse."""

    def compute(pid: int, address: int) -> str:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split(None, 5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                path = fields[5].removesuffix(" (deleted)")
                return f"{os.path.basename(path)}+0x{address - start + int(fields[2], 16):x}"
        raise AssertionError(f"{address:#x} is not mapped in {pid}")

    return compute
