"""Socket descriptors of running processes, read from /proc.

The kernel side learns sockets from the system calls that create them; the
ones opened before the agent started are seeded from here.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from podflame.symbolizer.text import decode

O_CLOEXEC = 0o2000000


@dataclass(frozen=True)
class SocketDescriptor:
    fd: int
    cloexec: bool


def processes(proc: Path = Path("/proc")) -> Iterator[int]:
    """Process ids (thread groups; threads share their descriptor table)."""
    for entry in os.scandir(proc):
        if entry.name.isdigit():
            yield int(entry.name)


def socket_descriptors(pid: int, proc: Path = Path("/proc")) -> list[SocketDescriptor]:
    """The process's socket descriptors; empty when it is gone or unreadable."""
    fd_dir = proc / str(pid) / "fd"
    found = []
    try:
        entries = list(os.scandir(fd_dir))
    except OSError:
        return []
    for entry in entries:
        try:
            target = os.readlink(entry.path)
        except OSError:
            continue  # closed since the listing
        if target.startswith("socket:"):
            fd = int(entry.name)
            found.append(SocketDescriptor(fd, _cloexec(proc / str(pid) / "fdinfo" / entry.name)))
    return found


def _cloexec(fdinfo: Path) -> bool:
    try:
        for line in decode(fdinfo.read_bytes()).splitlines():
            if line.startswith("flags:"):
                return bool(int(line.split()[1], 8) & O_CLOEXEC)
    except (OSError, ValueError, IndexError):
        pass
    return False
