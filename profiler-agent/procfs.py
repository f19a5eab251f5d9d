"""Small readers of /proc/PID files; None when the process is gone."""

import os
from dataclasses import dataclass
from pathlib import Path

from podflame.symbolizer.text import decode

# /proc/PID/stat is one line of 52 numbers and a name of at most 64 bytes.
STAT_MAX_BYTES = 4096


@dataclass(frozen=True)
class ProcessStat:
    """What /proc/PID/stat says of a process's identity and its current program.

    The start time identifies the process (with the pid); the name and the
    addresses of code, stack and heap are set anew by every exec (at random
    places, under ASLR), so together they tell one program image from the next.
    """

    comm: str
    start_ticks: int  # field 22: clock ticks after boot
    start_code: int  # field 26
    end_code: int  # field 27
    start_stack: int  # field 28
    start_brk: int  # field 47


def read_comm(pid: int, proc: Path = Path("/proc")) -> str | None:
    try:
        return decode((proc / str(pid) / "comm").read_bytes()).rstrip("\n")
    except OSError:
        return None


def read_start_ticks(pid: int, proc: Path = Path("/proc")) -> int | None:
    """Start time in clock ticks after boot: with the pid, it identifies a process."""
    stat = read_stat(pid, proc)
    return stat.start_ticks if stat is not None else None


def read_stat(pid: int, proc: Path = Path("/proc")) -> ProcessStat | None:
    # Read on every announcement (a thousand a second under churn), so with
    # os.open/os.read: a quarter of pathlib's cost when the process is gone.
    # A name need not be UTF-8: undecodable bytes are escaped (symbolizer.text).
    try:
        fd = os.open(f"{proc}/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = decode(os.read(fd, STAT_MAX_BYTES))
    except OSError:
        return None
    finally:
        os.close(fd)
    # comm may hold spaces and parentheses: it ends at the last ")".
    open_at, close_at = text.find("("), text.rfind(")")
    fields = text[close_at + 2 :].split()  # fields[0] is field 3
    try:
        return ProcessStat(
            comm=text[open_at + 1 : close_at],
            start_ticks=int(fields[19]),
            start_code=int(fields[23]),
            end_code=int(fields[24]),
            start_stack=int(fields[25]),
            start_brk=int(fields[44]) if len(fields) > 44 else 0,
        )
    except (IndexError, ValueError):
        return None
