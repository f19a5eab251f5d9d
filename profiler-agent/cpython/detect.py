"""Is this process running CPython, which version, and where is its runtime state?

Looked for in the process's own files, never in what the node has installed: the
interpreter executable or libpython it maps, opened inside its root (a container's
filesystem) with the symbolizer's safe opening, its inode checked against the mapping.
The version comes from that file or its memory: `Py_Version` (3.11+), else the
`PY_VERSION` string in .rodata; 3.13+ must agree with the `_Py_DebugOffsets` at the start
of `_PyRuntime`, which also gives the offsets.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from podflame.symbolizer.elf import ElfError, NamedSymbols, read_named_section, read_named_symbols
from podflame.symbolizer.files import open_in_root
from podflame.symbolizer.procmaps import Mapping

from .layouts import DEBUG_OFFSETS_SIZE, TABLE, Layout, UnsupportedLayout, layout_from_debug_offsets
from .memory import ProcessMemory, UnreadableMemory, all_mappings

# File names an interpreter comes in: python3.11, python3, python, libpython3.11.so.1.0,
# libpython3.6m.so, python3.13t (free-threaded: found, then refused).
_NAME = re.compile(r"^(?:lib)?python(?:(\d+)(?:\.(\d+))?)?[a-z]*(?:\.so[.\d]*)?$")
_SYMBOLS = frozenset({"_PyRuntime", "Py_Version", "interp_head", "PyCode_Type"})
# PY_VERSION in .rodata (3.6-3.10). The linker may merge it into the tail of a longer
# string (".../versions/3.9.18"), so only what follows it is anchored.
_VERSION_TEXT = re.compile(rb"(?<![\d.])3\.(\d{1,2})\.(\d{1,3})(?:(?:a|b|rc)\d{1,2})?\+?\x00")
_MAX_RODATA = 16 << 20
FIRST_MINOR, LAST_MINOR = 6, 13


@dataclass(frozen=True, slots=True)
class Interpreter:
    """A CPython found in a process: what the walk needs."""

    path: str  # the file, as the process sees it
    version: tuple[int, int, int]
    layout: Layout
    interpreters_head: int  # address of the pointer to the first interpreter state
    code_type: int  # address of PyCode_Type: every frame's code object must point at it


class NotSupported(Exception):
    """The process maps something that looks like CPython, but it cannot be walked.

    `reason` is the metric label: "not_cpython", "unknown_version", "free_threaded",
    "corrupt" or "unreadable".
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def looks_like_python(path: str) -> bool:
    return _NAME.match(os.path.basename(path)) is not None


def find_interpreter(
    pid: int, memory: ProcessMemory, proc: Path = Path("/proc")
) -> Interpreter | None:
    """The CPython in process `pid`; None if it maps no file named like one.

    Raises `NotSupported` when the files named like one hold no interpreter we can
    walk, and OSError when the process is gone.
    """
    mappings = all_mappings(pid, proc)
    candidates = _candidates(mappings)
    if not candidates:
        return None
    refusal: NotSupported | None = None
    # libpython first: an executable linked to it holds no runtime of its own.
    for path in sorted(candidates, key=lambda p: not os.path.basename(p).startswith("lib")):
        try:
            return _inspect(proc / str(pid) / "root", candidates[path], memory)
        except NotSupported as exc:
            refusal = refusal if refusal and exc.reason == "not_cpython" else exc
    assert refusal is not None
    raise refusal


def _candidates(mappings: list[Mapping]) -> dict[str, list[Mapping]]:
    """Files named like an interpreter, each with all its mappings."""
    found: dict[str, list[Mapping]] = {}
    for mapping in mappings:
        if mapping.is_file and not mapping.deleted and looks_like_python(mapping.path):
            found.setdefault(mapping.path, []).append(mapping)
    return found


def _inspect(root: Path, mappings: list[Mapping], memory: ProcessMemory) -> Interpreter:
    path = mappings[0].path
    symbols, rodata_version = _read_file(root, mappings[0])
    runtime = symbols.values.get("_PyRuntime") or symbols.values.get("interp_head")
    code_type = symbols.values.get("PyCode_Type")
    if runtime is None or code_type is None:
        raise NotSupported("not_cpython", f"{path}: no _PyRuntime and PyCode_Type")
    bias = _load_bias(symbols, mappings)
    try:
        version = _version(symbols, bias, memory, rodata_version, path)
        layout = _layout(version, bias + runtime, memory, "_PyRuntime" in symbols.values)
    except UnreadableMemory as exc:
        raise NotSupported("unreadable", f"{path}: {exc}") from exc
    except UnsupportedLayout as exc:
        raise NotSupported(exc.reason, f"{path}: {exc}") from exc
    head = bias + runtime + (layout.runtime_interpreters_head or 0)
    return Interpreter(path, version, layout, head, bias + code_type)


def _read_file(root: Path, mapping: Mapping) -> tuple[NamedSymbols, tuple[int, int, int] | None]:
    """The symbols we need, and the PY_VERSION in .rodata if there is exactly one."""
    try:
        with open_in_root(root, mapping.path) as stream:
            if os.fstat(stream.fileno()).st_ino != mapping.inode:
                raise NotSupported("unreadable", f"{mapping.path}: replaced since mapped")
            symbols = read_named_symbols(stream, _SYMBOLS)
            if "Py_Version" in symbols.values or not symbols.values:
                return symbols, None
            section = read_named_section(stream, ".rodata", _MAX_RODATA)
    except OSError as exc:
        raise NotSupported("unreadable", f"{mapping.path}: {exc}") from exc
    except ElfError as exc:
        raise NotSupported("not_cpython", f"{mapping.path}: {exc}") from exc
    return symbols, None if section is None else _rodata_version(section[0])


def _rodata_version(rodata: bytes) -> tuple[int, int, int] | None:
    found = {(3, int(m[1]), int(m[2])) for m in _VERSION_TEXT.finditer(rodata)}
    return found.pop() if len(found) == 1 else None


def _load_bias(symbols: NamedSymbols, mappings: list[Mapping]) -> int:
    """Run-time address minus link-time address, from the file's first mapping."""
    first = min(mappings, key=lambda m: m.start)
    for segment in symbols.segments:
        if segment.offset <= first.offset < segment.offset + max(segment.filesz, 1):
            return first.start - (first.offset - segment.offset + segment.vaddr)
    raise NotSupported("not_cpython", f"{first.path}: mapping at no loaded offset")


def _version(
    symbols: NamedSymbols,
    bias: int,
    memory: ProcessMemory,
    rodata_version: tuple[int, int, int] | None,
    path: str,
) -> tuple[int, int, int]:
    address = symbols.values.get("Py_Version")
    if address is not None:
        hexversion = memory.u32(bias + address)
        version = (hexversion >> 24, (hexversion >> 16) & 0xFF, (hexversion >> 8) & 0xFF)
    elif rodata_version is not None:
        version = rodata_version
    else:
        raise NotSupported("unknown_version", f"{path}: no Py_Version and no single version text")
    if version[0] != 3 or not FIRST_MINOR <= version[1] <= LAST_MINOR:
        raise NotSupported("unknown_version", f"{path}: version {version}")
    return version


def _layout(
    version: tuple[int, int, int], runtime: int, memory: ProcessMemory, has_runtime: bool
) -> Layout:
    minor = version[1]
    if minor >= 13:
        layout = layout_from_debug_offsets(memory.read(runtime, DEBUG_OFFSETS_SIZE))
        if layout.version != version[:2]:
            raise UnsupportedLayout(
                "corrupt", f"debug offsets of {layout.version}, binary {version}"
            )
        return layout
    if has_runtime != (minor >= 7):  # 3.6 has interp_head, later ones _PyRuntime
        raise UnsupportedLayout("corrupt", f"{version} with the runtime symbol of another")
    return TABLE[(3, minor)]
