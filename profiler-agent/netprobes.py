"""Which tracepoints the network tracer attaches, grouped by what they give.

Each feature lists its programs and the tracepoints they run on; a feature
whose tracepoint is missing (or whose format is not the one its program
reads) is turned off alone, and the agent logs what is lost.
"""

from dataclasses import dataclass, field
from pathlib import Path

from podflame.agent.tracefs import Field, tracepoint_fields

# Every syscall tracepoint shows its arguments (and sys_exit its return
# value) as 8-byte fields from this offset; the BPF program reads them so.
SYSCALL_ARGS_OFFSET = 16


@dataclass(frozen=True)
class Probe:
    tracepoint: str  # category:name
    function: str  # the BPF program
    arguments: int = 0  # sys_enter_*: how many arguments the program reads


@dataclass(frozen=True)
class Feature:
    name: str
    probes: tuple[Probe, ...]
    loses: str  # what is missing while it is off
    measured: bool = False  # a measured system call (attached after the /proc seed)
    requires: tuple[str, ...] = ()


def _syscall(
    name: str, arguments: int, *, enter: bool = True, exit: bool = True
) -> tuple[Probe, ...]:
    probes = []
    if enter:
        probes.append(Probe(f"syscalls:sys_enter_{name}", f"enter_{name}", arguments))
    if exit:
        probes.append(Probe(f"syscalls:sys_exit_{name}", f"exit_{name}"))
    return tuple(probes)


def _measured(name: str, arguments: int, *, requires: tuple[str, ...] = ()) -> Feature:
    return Feature(
        name,
        _syscall(name, arguments),
        f"{name}() is not measured",
        measured=True,
        requires=requires,
    )


_FOLLOW = "reads and writes on such sockets are missed"

# In attach order: descriptor bookkeeping, then the measured calls.
FEATURES: tuple[Feature, ...] = (
    Feature(
        "sockets",
        (*_syscall("socket", 2), *_syscall("close", 1, exit=False)),
        "sockets are not told from files, so read, write, readv and writev are not measured",
    ),
    Feature("socketpair", _syscall("socketpair", 4), f"socketpair() is not followed; {_FOLLOW}"),
    Feature("dup", _syscall("dup", 1), f"descriptors copied with dup() are missed; {_FOLLOW}"),
    Feature("dup2", _syscall("dup2", 2), f"descriptors copied with dup2() are missed; {_FOLLOW}"),
    Feature("dup3", _syscall("dup3", 3), f"descriptors copied with dup3() are missed; {_FOLLOW}"),
    Feature(
        "fcntl",
        _syscall("fcntl", 3),
        f"fcntl(F_DUPFD) copies and F_SETFD close-on-exec changes are missed; {_FOLLOW}",
    ),
    Feature(
        "close_range",
        _syscall("close_range", 3, exit=False),
        "close_range() is not followed: its closed sockets stay marked until reused",
    ),
    Feature(
        "fork",
        (Probe("task:task_newtask", "on_newtask"),),
        f"children do not inherit their parent's sockets; {_FOLLOW}",
    ),
    Feature(
        "exec",
        (Probe("sched:sched_process_exec", "on_exec"),),
        "exec() is not followed: close-on-exec sockets stay marked, and the new image's "
        "stacks are symbolized against the old one",
    ),
    Feature(
        "exit",
        (Probe("sched:sched_process_exit", "on_exit"),),
        "process exits are not followed: ended processes' tables wait for the drain's sweep",
    ),
    _measured("connect", 3),
    Feature(
        "connect_outcome",
        _syscall("getsockopt", 4),
        "non-blocking connects are reported as EINPROGRESS unless connect() is called again",
        requires=("connect",),
    ),
    _measured("accept", 1),
    _measured("accept4", 4),
    *(
        _measured(name, 1)
        for name in ("sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg")
    ),
    *(_measured(name, 1, requires=("sockets",)) for name in ("read", "write", "readv", "writev")),
)


@dataclass
class Plan:
    """The features to attach, those turned off (with why), and format-derived cflags."""

    features: tuple[Feature, ...]
    disabled: list[tuple[Feature, str]] = field(default_factory=list)
    cflags: list[str] = field(default_factory=list)

    @property
    def enabled(self) -> tuple[str, ...]:
        off = {feature.name for feature, _ in self.disabled}
        return tuple(f.name for f in self.features if f.name not in off)

    def fail(self, feature: Feature, reason: str) -> None:
        self.disabled.append((feature, reason))


def plan_features(events: Path, features: tuple[Feature, ...]) -> Plan:
    plan = Plan(features)
    for feature in features:
        reason = _missing_requirement(feature, plan) or _first_problem(events, feature, plan)
        if reason:
            plan.fail(feature, reason)
    return plan


def _missing_requirement(feature: Feature, plan: Plan) -> str | None:
    for required in feature.requires:
        if required not in plan.enabled:
            return f"{feature.name} needs {required}, which is off"
    return None


def _first_problem(events: Path, feature: Feature, plan: Plan) -> str | None:
    for probe in feature.probes:
        fields = tracepoint_fields(events, probe.tracepoint)
        if fields is None:
            return f"tracepoint {probe.tracepoint} is missing"
        problem = _format_problem(probe, fields, plan)
        if problem:
            return f"tracepoint {probe.tracepoint} has another format ({problem})"
    return None


def _format_problem(probe: Probe, fields: list[Field], plan: Plan) -> str | None:
    """What in the tracepoint's format differs from what the program reads, if anything."""
    at = {(f.offset, f.size) for f in fields}
    if probe.tracepoint.startswith("syscalls:sys_enter_"):
        for index in range(probe.arguments):
            if (SYSCALL_ARGS_OFFSET + 8 * index, 8) not in at:
                return f"no 8-byte argument {index} at offset {SYSCALL_ARGS_OFFSET + 8 * index}"
    elif probe.tracepoint.startswith("syscalls:sys_exit_"):
        if not any(
            f.name == "ret" and (f.offset, f.size) == (SYSCALL_ARGS_OFFSET, 8) for f in fields
        ):
            return f"no 8-byte ret at offset {SYSCALL_ARGS_OFFSET}"
    elif probe.tracepoint == "task:task_newtask":
        named = {f.name: f for f in fields}
        pid, flags = named.get("pid"), named.get("clone_flags")
        if pid is None or flags is None or pid.size != 4 or flags.size != 8:
            return "no 4-byte pid and 8-byte clone_flags"
        plan.cflags += [
            f"-DNEWTASK_PID_OFFSET={pid.offset}",
            f"-DNEWTASK_FLAGS_OFFSET={flags.offset}",
        ]
    return None
