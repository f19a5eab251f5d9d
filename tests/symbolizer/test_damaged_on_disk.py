"""A running program whose files are damaged or replaced on disk, symbolized through
the real /proc/PID/root and /proc/PID/map_files.

- Library corrupted in place (same inode): its frames become ``libspin.so+0x...``,
  one ELF error is counted, the program's own frames keep their names.
- Executable replaced (a new file renamed over it): the mapped file is still read,
  through map_files, and names everything.
- The same without CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE (which map_files needs):
  ``spin_in_lib+0x...``, counted as an unreadable binary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from podflame.symbolizer import Symbolizer
from tests.fixtures import build_spin_in_lib, corrupt_section_headers

FUNCTIONS = {"exe_spin": "spin_in_lib", "lib_spin": "libspin.so"}


@pytest.fixture
def program(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, int]]]:
    """spin_in_lib, waiting on stdin, and the runtime address of a byte inside each
    function (read from the files before anything is damaged)."""
    binary, library = build_spin_in_lib(tmp_path)
    process = subprocess.Popen(
        [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    files = {"spin_in_lib": binary, "libspin.so": library}
    addresses = {
        function: runtime_address(process.pid, files[module], function)
        for function, module in FUNCTIONS.items()
    }
    yield process, addresses
    process.communicate(timeout=10)


def runtime_address(pid: int, path: Path, function: str) -> int:
    """Where a byte 4 into `function` of the file at `path` is mapped in process `pid`."""
    with path.open("rb") as stream:
        elf = ELFFile(stream)
        symbol = elf.get_section_by_name(".symtab").get_symbol_by_name(function)[0]  # type: ignore[union-attr]
        offset = next(elf.address_offsets(symbol["st_value"])) + 4
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5] == str(path) and "x" in fields[1]:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            file_offset = int(fields[2], 16)
            if file_offset <= offset < file_offset + end - start:
                return start + offset - file_offset
    raise AssertionError(f"{function} of {path} is not mapped in {pid}")


def fallback(module: str, address: int, pid: int) -> str:
    """The module+offset name the symbolizer must give, from the maps line."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(None, 5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return f"{module}+0x{address - start + int(fields[2], 16):x}"
    raise AssertionError(f"{address:#x} not mapped")


def test_library_corrupted_after_start_gives_module_offsets(
    program: tuple[subprocess.Popen[str], dict[str, int]], tmp_path: Path
) -> None:
    process, addresses = program
    corrupt_section_headers(tmp_path / "libspin.so")
    symbolizer = Symbolizer()

    names = symbolizer.user(process.pid, [addresses["exe_spin"], addresses["lib_spin"]])

    lib_frame = fallback("libspin.so", addresses["lib_spin"], process.pid)
    assert names == ["exe_spin", lib_frame]
    assert symbolizer.stats.elf_errors == 1
    assert symbolizer.stats.binaries_unreadable == 0
    assert process.poll() is None


def replace_on_disk(path: Path) -> None:
    """A new file renamed over `path`, as a package upgrade does."""
    new = path.with_suffix(".new")
    new.write_bytes(b"\x7fELF" + b"\xff" * 4096)
    new.chmod(0o755)
    os.rename(new, path)


def test_executable_replaced_after_start_is_read_through_map_files(
    program: tuple[subprocess.Popen[str], dict[str, int]], tmp_path: Path
) -> None:
    process, addresses = program
    replace_on_disk(tmp_path / "spin_in_lib")
    symbolizer = Symbolizer()

    names = symbolizer.user(process.pid, [addresses["exe_spin"], addresses["lib_spin"]])

    assert names == ["exe_spin", "lib_spin"]
    assert (symbolizer.stats.elf_errors, symbolizer.stats.binaries_unreadable) == (0, 0)


SYMBOLIZE = """
import json, sys
from podflame.symbolizer import Symbolizer
symbolizer = Symbolizer()
names = symbolizer.user(int(sys.argv[1]), [int(a) for a in sys.argv[2:]])
print(json.dumps([names, symbolizer.stats.binaries_unreadable]))
"""


def test_replaced_executable_without_map_files_access_gives_module_offsets(
    program: tuple[subprocess.Popen[str], dict[str, int]], tmp_path: Path
) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop capabilities")
    process, addresses = program
    replace_on_disk(tmp_path / "spin_in_lib")
    drop = "-sys_admin,-checkpoint_restore"
    command = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", "--"]
    wanted = [addresses["exe_spin"], addresses["lib_spin"]]
    run = subprocess.run(
        [*command, sys.executable, "-c", SYMBOLIZE, str(process.pid), *map(str, wanted)],
        capture_output=True,
        text=True,
        check=True,
    )
    names, unreadable = json.loads(run.stdout)

    assert names == [fallback("spin_in_lib", addresses["exe_spin"], process.pid), "lib_spin"]
    assert unreadable == 1
