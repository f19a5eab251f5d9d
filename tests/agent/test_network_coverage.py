"""What the socket descriptor tracking follows and what it misses, measured.

read/write/readv/writev count only on descriptors known to be sockets. Each
test runs a workload in its own process and counts the calls the tracer saw
against the calls made; docs/network.md quotes these figures.
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from podflame.agent.network import NetworkDrain, NetworkTracer
from tests.agent.netlib import copy_events, drain_after, latency_of, python

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]

CALLS = 20

DUP_TRACEPOINTS = {
    f"syscalls:sys_{side}_{name}"
    for name in ("dup", "dup2", "dup3", "fcntl")
    for side in ("enter", "exit")
}


@pytest.fixture(scope="module")
def tracer(require_bpf: None) -> Iterator[NetworkTracer]:
    tracer = NetworkTracer()
    tracer.start()
    yield tracer
    tracer.close()


def counted(drain: NetworkDrain, pid: int, syscall: str) -> int:
    entry = latency_of(drain, pid, syscall)
    return entry.count if entry else 0


# The socket becomes the child's stdin: fork, dup2(socket, 0) and exec in
# between (subprocess's way, and inetd's, and a shell redirect's).
STDIN_SOCKET = """
    import socket, subprocess, sys
    calls = int(sys.argv[1])
    ours, theirs = socket.socketpair()
    ours.sendall(b"x" * calls)
    reader = f"import os\\nfor _ in range({calls}): os.read(0, 1)"
    child = subprocess.Popen([sys.executable, "-c", reader], stdin=theirs)
    print(child.pid, flush=True)
    assert child.wait() == 0
"""


def stdin_socket_reads(tracer: NetworkTracer) -> int:
    tracer.drain()
    parent = python(STDIN_SOCKET, CALLS, stdout=subprocess.PIPE)
    output, _ = parent.communicate(timeout=60)
    assert parent.returncode == 0
    return counted(drain_after(tracer), int(output), "read")


def test_a_socket_passed_as_stdin_through_dup2_and_exec_is_followed(
    tracer: NetworkTracer,
) -> None:
    assert stdin_socket_reads(tracer) == CALLS


def test_without_following_dup_a_socket_passed_as_stdin_is_missed(
    require_bpf: None, tmp_path: Path
) -> None:
    tracer = NetworkTracer(events=copy_events(tmp_path, leave_out=DUP_TRACEPOINTS))
    tracer.start()
    try:
        assert not {"dup", "dup2", "dup3", "fcntl"} & set(tracer.enabled)
        assert stdin_socket_reads(tracer) == 0  # all of them missed
    finally:
        tracer.close()


FORKED = """
    import os, socket, sys
    calls = int(sys.argv[1])
    ours, theirs = socket.socketpair()
    ours.sendall(b"x" * calls)
    child = os.fork()
    if child == 0:
        for _ in range(calls):
            os.read(theirs.fileno(), 1)
        os._exit(0)
    print(child, flush=True)
    os.waitpid(child, 0)
"""


def test_a_forked_child_inherits_its_parents_sockets(tracer: NetworkTracer) -> None:
    tracer.drain()
    parent = python(FORKED, CALLS, stdout=subprocess.PIPE)
    output, _ = parent.communicate(timeout=60)
    assert counted(drain_after(tracer), int(output), "read") == CALLS


# A socket received over a unix socket (SCM_RIGHTS) is unknown until a
# socket-only call (here recv) shows it is one.
RECEIVED = """
    import os, socket, sys
    calls = int(sys.argv[1])
    channel, far_end = socket.socketpair(socket.AF_UNIX)
    child = os.fork()
    if child == 0:
        channel.close()
        _, fds, _, _ = socket.recv_fds(far_end, 1, 1)
        for _ in range(calls):
            os.read(fds[0], 1)
        received = socket.socket(fileno=fds[0])
        received.recv(1, socket.MSG_PEEK)
        for _ in range(calls):
            os.read(fds[0], 1)
        os._exit(0)
    far_end.close()
    ours, theirs = socket.socketpair()  # made after the fork: not inherited
    ours.sendall(b"x" * 2 * calls)
    socket.send_fds(channel, [b"!"], [theirs.fileno()])
    print(child, flush=True)
    os.waitpid(child, 0)
"""


def test_a_socket_received_over_a_unix_socket_counts_once_used_as_one(
    tracer: NetworkTracer,
) -> None:
    tracer.drain()
    parent = python(RECEIVED, CALLS, stdout=subprocess.PIPE)
    output, _ = parent.communicate(timeout=60)
    # The first CALLS reads come before the recv and are missed.
    assert counted(drain_after(tracer), int(output), "read") == CALLS


SENDFILE = """
    import os, socket, sys, tempfile
    calls = int(sys.argv[1])
    ours, theirs = socket.socketpair()
    with tempfile.TemporaryFile() as source:
        source.write(b"x" * calls)
        source.flush()
        for offset in range(calls):
            os.sendfile(ours.fileno(), source.fileno(), offset, 1)
    assert len(theirs.recv(calls, socket.MSG_WAITALL)) == calls
"""


def test_sendfile_is_not_traced(tracer: NetworkTracer) -> None:
    tracer.drain()
    process = python(SENDFILE, CALLS)
    assert process.wait(60) == 0
    drain = drain_after(tracer)
    sent = sum(counted(drain, process.pid, s) for s in ("write", "writev", "sendto", "sendmsg"))
    assert sent == 0  # sendfile() (and splice) move the bytes unseen
    assert counted(drain, process.pid, "recvfrom") == 1
