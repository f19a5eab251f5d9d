"""Python frames from unmodified CPython (3.6-3.13): detection, per-version struct offsets,
the stack walk the BPF program mirrors, and code objects to qualname, file and line."""

from .code import CodeReader, NotACode, PythonFrame
from .detect import Interpreter, NotSupported, find_interpreter
from .memory import ProcessMemory, UnreadableMemory
from .process import PythonProcess, PythonProcesses
from .walker import Counts, RawFrame, ThreadStack, walk_threads

__all__ = [
    "CodeReader",
    "Counts",
    "Interpreter",
    "NotACode",
    "NotSupported",
    "ProcessMemory",
    "PythonFrame",
    "PythonProcess",
    "PythonProcesses",
    "RawFrame",
    "ThreadStack",
    "UnreadableMemory",
    "find_interpreter",
    "walk_threads",
]
