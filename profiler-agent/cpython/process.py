"""One object per Python process, and the counters of all: what the agent holds.

`PythonProcesses.attach` at a process's capture finds its interpreter (or counts why
not); `PythonProcess.stacks` walks its threads now (the BPF walker records the same
`RawFrame`s per sample); `PythonProcess.resolve` names a frame from its code object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .code import CodeReader, NotACode, PythonFrame
from .detect import Interpreter, NotSupported, find_interpreter
from .memory import ProcessMemory, UnreadableMemory
from .walker import Counts, RawFrame, ThreadStack, walk_threads


@dataclass(slots=True)
class PythonProcess:
    pid: int
    interpreter: Interpreter
    memory: ProcessMemory
    codes: CodeReader
    errors: Counts

    def stacks(self) -> list[ThreadStack]:
        """Every thread's Python stack, read now (never raises for what memory holds)."""
        return walk_threads(self.memory, self.interpreter, self.errors)

    def resolve(self, frame: RawFrame) -> PythonFrame | None:
        """The frame's qualname, file and line; None (counted) if its code object does
        not read as one any more."""
        try:
            return self.codes.resolve(frame)
        except NotACode:
            self.errors.count("bad_code_object")
            return None


@dataclass(slots=True)
class PythonProcesses:
    """Finds CPython in processes, counting the ones refused and the walks' errors."""

    proc: Path = Path("/proc")
    refused: Counts = field(default_factory=Counts)
    errors: Counts = field(default_factory=Counts)

    def attach(self, pid: int) -> PythonProcess | None:
        """The process's CPython, or None: not Python, refused (counted), or gone."""
        try:
            return self.find(pid)
        except NotSupported as exc:
            self.refused.count(exc.reason)
            return None

    def find(self, pid: int) -> PythonProcess | None:
        """As `attach`, raising `NotSupported` for a refusal (not counted)."""
        try:
            memory = ProcessMemory.attach(pid, self.proc)
            interpreter = find_interpreter(pid, memory, self.proc)
        except (OSError, UnreadableMemory):
            return None
        if interpreter is None:
            return None
        return PythonProcess(pid, interpreter, memory, CodeReader(memory, interpreter), self.errors)
