"""Addresses to function names: kernel symbols from /proc/kallsyms, user symbols
from ELF files reached through /proc/PID/root.
"""

from .kallsyms import KernelSymbols
from .symbolizer import Symbolizer, SymbolizerStats

__all__ = ["KernelSymbols", "Symbolizer", "SymbolizerStats"]
