"""Addresses to function names: kernel symbols from /proc/kallsyms, user symbols from ELF files reached through /proc/PID/root."""
