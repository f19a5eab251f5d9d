"""Opening files that a profiled (and possibly hostile) process controls.

A container can put anything at the path of a file it once mapped: a FIFO,
on which a plain open() blocks until a writer comes (the agent would hang for
good), a terminal, which an open could make the agent's controlling one, a
device, or a symbolic link. Files are therefore opened non-blocking, with
O_NOCTTY, and kept only if they are regular files.

Symbolic links are the subtle part. Under /proc/PID/root the kernel resolves
an absolute link, or enough ``..``, against the *agent's* root: a container
that makes its ``/tmp`` a link to ``/etc`` would have the agent read host
files. O_NOFOLLOW guards only the last component, so a file under a
container's root is opened with `open_in_root`: openat2() with
RESOLVE_IN_ROOT (Linux 5.6+), which resolves every link as if the root were
``/``, or on older kernels a walk one component at a time that does the same
itself and never leaves the root.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import stat
from pathlib import Path
from typing import Any, BinaryIO

# The only flags a container file is opened with (O_NOCTTY: a terminal there must
# not become the agent's; O_NONBLOCK: a FIFO there must not block the open).
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_SYMLINKS = 40  # as the kernel allows in one path walk
# openat2(2): the syscall number (the same on the architectures we run on) and
# RESOLVE_* flags from linux/openat2.h.
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def open_regular(path: Path | str, *, follow_symlinks: bool = True) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file; OSError otherwise.

    For paths the agent itself chose (/proc/PID/map_files, its own cache);
    a path inside a container goes through `open_in_root`.
    """
    return os.fdopen(open_regular_fd(path, follow_symlinks=follow_symlinks), "rb")


def open_regular_fd(path: Path | str, *, follow_symlinks: bool = True) -> int:
    """As `open_regular`, the raw file descriptor (the caller closes it)."""
    flags = _READ_FLAGS if follow_symlinks else _READ_FLAGS | os.O_NOFOLLOW
    return _regular_or_closed(os.open(path, flags), path)


def open_in_root(root: Path | str, path: str, *, use_openat2: bool = True) -> BinaryIO:
    """`path` as a process whose root is `root` sees it, opened for reading.

    Symbolic links (every component, absolute or relative) and ``..`` are
    resolved inside `root`, never out of it; magic links (/proc/self/...)
    are refused. OSError unless the result is a regular file. `use_openat2`
    False forces the fallback walk (for tests).
    """
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _openat2_in_root(root_fd, path) if use_openat2 else None
        if fd is None:
            fd = _walk_in_root(root_fd, path)
    finally:
        os.close(root_fd)
    return os.fdopen(_regular_or_closed(fd, path), "rb")


def _regular_or_closed(fd: int, path: Path | str) -> int:
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _openat2_in_root(root_fd: int, path: str) -> int | None:
    """The file opened by openat2(RESOLVE_IN_ROOT); None where the kernel has no openat2."""
    syscall = _syscall()
    if syscall is None:
        return None
    number, call = syscall
    how = _OpenHow(_READ_FLAGS, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    encoded = os.fsencode(path)
    if b"\0" in encoded:
        raise OSError(errno.EINVAL, "NUL in a path", path)
    fd = call(number, root_fd, encoded or b".", ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        return int(fd)
    error = ctypes.get_errno()
    # ENOSYS: a kernel before 5.6. EPERM is never a permission problem of the
    # file (that is EACCES): seccomp filters that do not know openat2 answer so.
    if error in (errno.ENOSYS, errno.EPERM):
        return None
    raise OSError(error, os.strerror(error), path)


@functools.cache
def _syscall() -> tuple[int, Any] | None:
    number = _SYS_OPENAT2.get(platform.machine())
    if number is None:
        return None
    call = ctypes.CDLL(None, use_errno=True).syscall
    call.restype = ctypes.c_long
    call.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    return number, call


def _walk_in_root(root_fd: int, path: str) -> int:
    """openat2's RESOLVE_IN_ROOT done by hand: one component at a time.

    Every directory is held open (O_PATH) on a stack: ``..`` pops it (and
    stays at the root), an absolute link empties it, and no component is
    ever opened except relative to a directory inside the root, without
    following links, so neither a link nor a rename made meanwhile leads out.
    """
    stack = [os.dup(root_fd)]
    pending = _components(path)
    links = 0
    try:
        while pending:
            part = pending.pop()
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = _open_unless_link(part, not pending, stack[-1])
            if fd is not None:
                if not pending:
                    return fd
                stack.append(fd)
                continue
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
            target = os.readlink(part, dir_fd=stack[-1])
            if target.startswith("/"):
                while len(stack) > 1:
                    os.close(stack.pop())
            pending.extend(_components(target))
        raise OSError(errno.EISDIR, "names the root directory", path)
    finally:
        for fd in stack:
            os.close(fd)


def _open_unless_link(part: str, last: bool, dir_fd: int) -> int | None:
    """`part` opened in `dir_fd` without following it (for reading if `last`, else as a
    directory to walk on); None if it is a symbolic link."""
    flags = _READ_FLAGS | os.O_NOFOLLOW if last else _PATH_FLAGS
    try:
        fd = os.open(part, flags, dir_fd=dir_fd)
    except OSError as error:
        if error.errno != errno.ELOOP:  # ELOOP: a link, with O_NOFOLLOW
            raise
        return None
    if stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _components(path: str) -> list[str]:
    """The parts of `path`, last first (a stack to pop from)."""
    return [p for p in reversed(path.split("/")) if p not in ("", ".")]
