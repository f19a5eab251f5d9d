"""Small readers of /proc/PID files; None when the process is gone."""

from pathlib import Path


def read_comm(pid: int, proc: Path = Path("/proc")) -> str | None:
    try:
        return (proc / str(pid) / "comm").read_text().rstrip("\n")
    except OSError:
        return None


def read_start_ticks(pid: int, proc: Path = Path("/proc")) -> int | None:
    """Start time in clock ticks after boot: with the pid, it identifies a process."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # comm may hold spaces and parentheses
    try:
        return int(fields[19])  # field 22; fields[0] is field 3
    except (IndexError, ValueError):
        return None
