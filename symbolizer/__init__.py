"""Addresses to function names: kernel symbols from /proc/kallsyms, user symbols
from ELF files reached through /proc/PID/root.
"""

from .kallsyms import KernelSymbols
from .symbolizer import PendingRead, ProcessImage, Symbolizer, SymbolizerStats, is_symbolized

__all__ = [
    "KernelSymbols",
    "PendingRead",
    "ProcessImage",
    "Symbolizer",
    "SymbolizerStats",
    "is_symbolized",
]
