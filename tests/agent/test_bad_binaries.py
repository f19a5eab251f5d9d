"""The real agent, on the real kernel, profiling a program whose files are damaged on disk
after it started: it names what it can, gives module+offset for the rest, counts the
bad binary, and goes on profiling the next program."""

import os
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from tests.agent.test_pipeline import folded, parse_metrics, render_metrics, running_agent
from tests.fixtures import build_burn7030, build_spin_in_lib, corrupt_section_headers

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]


def function_ranges(path: Path) -> dict[str, range]:
    """File offsets of each function of an (intact) shared library."""
    with path.open("rb") as stream:
        elf = ELFFile(stream)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        ranges = {}
        for symbol in symtab.iter_symbols():
            if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_value"]:
                start = next(elf.address_offsets(symbol["st_value"]))
                ranges[symbol.name] = range(start, start + symbol["st_size"])
    return ranges


def test_agent_keeps_profiling_past_damaged_binaries(podflame_server: str, tmp_path: Path) -> None:
    program, library = build_spin_in_lib(tmp_path)
    functions = function_ranges(library)
    healthy = build_burn7030(tmp_path / "burn7030")
    with running_agent(podflame_server, interval=1.0) as agent:
        damaged = subprocess.Popen(
            [str(program), "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert damaged.stdin is not None and damaged.stdout is not None
        assert damaged.stdout.readline() == "ready\n"  # idle: not sampled, not yet opened
        corrupt_section_headers(library)
        replacement = program.with_suffix(".new")
        replacement.write_bytes(b"\x7fELF" + b"\xff" * 4096)
        os.rename(replacement, program)  # the executable replaced, as by an upgrade
        damaged.stdin.write("go\n")
        damaged.stdin.flush()
        assert damaged.stdout.readline() == "done\n"
        after = subprocess.Popen([str(healthy), "1.0"], stdout=subprocess.DEVNULL)
        assert after.wait(30) == 0
        metrics = parse_metrics(render_metrics(agent))
        damaged.stdin.close()
        damaged.wait(10)

    assert metrics["podflame_agent_symbolizer_elf_errors_total"] >= 1
    stacks = folded(podflame_server, damaged.pid)
    total = sum(value for _, value in stacks)
    in_library = [
        (frame, value)
        for stack, value in stacks
        for frame in stack
        if frame.startswith("libspin.so+0x")
    ]
    # Half the time was spent in the library: it is there, by module and offset.
    assert sum(value for _, value in in_library) > 0.3 * total, stacks[:5]
    offsets = {int(frame.split("+")[1], 16) for frame, _ in in_library}
    named = {name for name, where in functions.items() for o in offsets if o in where}
    assert "lib_spin" in named
    assert all(any(o in where for where in functions.values()) for o in offsets), offsets
    # The replaced executable is still read as mapped (map_files).
    names = {frame for stack, _ in stacks for frame in stack}
    assert {"main", "exe_spin"} <= names, sorted(names)
    # And the agent went on: the next program is profiled with its names.
    names_after = {frame for stack, _ in folded(podflame_server, after.pid) for frame in stack}
    assert {"main", "run", "burn_a", "burn_b", "spin"} <= names_after, sorted(names_after)
