"""Addresses to function names: kernel symbols from /proc/kallsyms, user symbols
from ELF files reached through /proc/PID/root.
"""

from .kallsyms import KernelSymbols
from .symbolizer import PendingRead, ProcessImage, Symbolizer, SymbolizerStats, is_symbolized
from .symbols import Symbol

__all__ = [
    "KernelSymbols",
    "PendingRead",
    "ProcessImage",
    "Symbol",
    "Symbolizer",
    "SymbolizerStats",
    "is_symbolized",
]
