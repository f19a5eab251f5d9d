"""Opening files that a profiled (and possibly hostile) process controls.

A container can put anything at the path of a file it once mapped: a FIFO,
on which a plain open() blocks until a writer comes (the agent would hang for
good), a device, or a symbolic link, which under /proc/PID/root resolves
against the agent's root rather than the container's. Files are therefore
opened non-blocking, kept only if they are regular files, and, where the path
names the file itself, without following a final symbolic link.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


def open_regular(path: Path | str, *, follow_symlinks: bool = True) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file; OSError otherwise."""
    return os.fdopen(open_regular_fd(path, follow_symlinks=follow_symlinks), "rb")


def open_regular_fd(path: Path | str, *, follow_symlinks: bool = True) -> int:
    """As `open_regular`, the raw file descriptor (the caller closes it)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd
