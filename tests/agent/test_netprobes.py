"""Planning the network tracer's features from tracefs formats: a missing or changed
tracepoint turns off only what needs it. Uses copies of this kernel's format files."""

from pathlib import Path

from podflame.agent.netprobes import FEATURES, plan_features
from tests.agent.netlib import copy_events


def test_every_feature_is_planned_on_this_kernel(tmp_path: Path) -> None:
    plan = plan_features(copy_events(tmp_path), FEATURES)
    assert plan.disabled == []
    assert set(plan.enabled) == {feature.name for feature in FEATURES}
    assert "-DNEWTASK_PID_OFFSET=8" in plan.cflags


def test_a_missing_tracepoint_turns_off_only_what_needs_it(tmp_path: Path) -> None:
    events = copy_events(
        tmp_path, leave_out={"syscalls:sys_exit_socket", "syscalls:sys_enter_dup2"}
    )
    plan = plan_features(events, FEATURES)
    reasons = {feature.name: reason for feature, reason in plan.disabled}
    assert reasons["sockets"] == "tracepoint syscalls:sys_exit_socket is missing"
    assert reasons["dup2"] == "tracepoint syscalls:sys_enter_dup2 is missing"
    # read/write need to know sockets from files; recv/send do not.
    for name in ("read", "write", "readv", "writev"):
        assert reasons[name] == f"{name} needs sockets, which is off"
    assert set(reasons) == {"sockets", "dup2", "read", "write", "readv", "writev"}
    assert {"recvfrom", "sendto", "connect", "dup", "dup3", "fork"} <= set(plan.enabled)


def test_a_format_other_than_the_program_reads_turns_the_feature_off(tmp_path: Path) -> None:
    events = copy_events(tmp_path)
    connect = events / "syscalls" / "sys_enter_connect" / "format"
    connect.write_text(connect.read_text().replace("offset:24;", "offset:28;"))
    newtask = events / "task" / "task_newtask" / "format"
    newtask.write_text(newtask.read_text().replace("clone_flags", "flags"))
    plan = plan_features(events, FEATURES)
    reasons = {feature.name: reason for feature, reason in plan.disabled}
    assert reasons["connect"].startswith("tracepoint syscalls:sys_enter_connect has another format")
    assert reasons["connect_outcome"] == "connect_outcome needs connect, which is off"
    assert reasons["fork"].startswith("tracepoint task:task_newtask has another format")
    assert set(reasons) == {"connect", "connect_outcome", "fork"}
    assert not [flag for flag in plan.cflags if "NEWTASK" in flag]
