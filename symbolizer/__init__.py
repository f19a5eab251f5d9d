"""Addresses to function names: kernel symbols from /proc/kallsyms, user symbols
from ELF files reached through /proc/PID/root.

Four parts (symbolizer.py tells which does what): process images, the
symbol-table cache, debug-file lookup and the resolver; `Symbolizer` builds them.
"""

from .images import PendingRead, ProcessImage, ProcessImages
from .kallsyms import KernelSymbols
from .resolver import Resolver, is_symbolized
from .symbolizer import Symbolizer, SymbolizerStats
from .symbols import Symbol
from .tables import SymbolTables

__all__ = [
    "KernelSymbols",
    "PendingRead",
    "ProcessImage",
    "ProcessImages",
    "Resolver",
    "Symbol",
    "SymbolTables",
    "Symbolizer",
    "SymbolizerStats",
    "is_symbolized",
]
