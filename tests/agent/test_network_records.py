"""Turning the kernel's connection keys into wire records (no BPF needed)."""

import os
import socket

from podflame.agent.network import (
    AF_INET,
    AF_INET6,
    ConnectOutcome,
    address_text,
    merged_outcomes,
    result_name,
)
from podflame.agent.programs import ProcessGeneration
from podflame.agent.sockets import socket_descriptors


def test_addresses_are_text_and_ipv4_mapped_ones_are_ipv4() -> None:
    assert address_text(AF_INET, bytes([10, 1, 2, 3]) + bytes(12)) == "10.1.2.3"
    assert address_text(AF_INET6, socket.inet_pton(socket.AF_INET6, "fd00::7")) == "fd00::7"
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:10.1.2.3")
    assert address_text(AF_INET6, mapped) == "10.1.2.3"


def test_results_are_ok_or_errno_names() -> None:
    assert result_name(0) == "ok"
    assert result_name(111) == "ECONNREFUSED"
    assert result_name(115) == "EINPROGRESS"
    assert result_name(4000) == "errno 4000"


def test_the_same_destination_reached_two_ways_is_one_record() -> None:
    process = ProcessGeneration(7, 1)
    v4 = ConnectOutcome(process, "10.1.2.3", 80, "ok", 2, 900, {100: 1, 101: 1})
    mapped = ConnectOutcome(process, "10.1.2.3", 80, "ok", 1, 1200, {101: 1})
    other = ConnectOutcome(process, "10.1.2.3", 80, "ECONNREFUSED", 1, 50, {40: 1})
    merged = merged_outcomes([v4, mapped, other])
    assert merged == [
        ConnectOutcome(process, "10.1.2.3", 80, "ok", 3, 1200, {100: 1, 101: 2}),
        other,
    ]


def test_socket_descriptors_of_a_process_with_close_on_exec() -> None:
    plain, flagged = socket.socketpair()
    os.set_inheritable(plain.fileno(), True)  # clears close-on-exec
    try:
        found = {d.fd: d.cloexec for d in socket_descriptors(os.getpid())}
        assert found[plain.fileno()] is False
        assert found[flagged.fileno()] is True  # Python's sockets are close-on-exec
        with open(os.devnull) as not_a_socket:
            assert not_a_socket.fileno() not in found
    finally:
        plain.close()
        flagged.close()
    assert socket_descriptors(2**22 + 12345) == []  # no such process
