"""Python frames through the whole agent: a CPython workload under the real agent (BPF on
the real kernel), shipped to a real server, read back as the flame graph, the folded text
and pprof, against py-spy's recording of the same process in the same window.

One agent for the module, sampling at 499 Hz (as test_cpython_bpf.py: at 99 Hz a 3 s run
is too few samples to compare shares within a few points).
"""

import ast
import collections
import ctypes
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from podflame.agent.agent import Agent
from podflame.agent.cpython.watch import MAX_LOOKS
from podflame.model.pprof import decode
from tests.agent.pythons import TARGET, interpreters, target
from tests.agent.test_cpython_bpf import FUNCTIONS, RATE, py_spy, spy_shares
from tests.agent.test_pipeline import (
    drain_and_ship,
    folded,
    parse_metrics,
    render_metrics,
    running_agent,
)

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]
RECENT = [(label, path) for label, path in interpreters(10)]
SECONDS = 3


@pytest.fixture(scope="module")
def agent(module_server: str, require_bpf: None) -> Iterator[Agent]:
    with running_agent(module_server, interval=600, frequency=RATE, network=False) as agent:
        yield agent


def start_watched(agent: Agent, python: Path) -> tuple[subprocess.Popen[bytes], float]:
    """The target's busy loop, once the agent walks its Python stacks, and the time
    after a drain that leaves out what it ran before (its batch ends before that time)."""
    child = subprocess.Popen([str(python), str(TARGET), "busy"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        assert agent.python is not None
        while not agent.python.watches(child.pid):
            assert time.monotonic() < deadline, "the agent never found the target's CPython"
            time.sleep(0.02)
        drain_and_ship(agent)
    except BaseException:
        child.kill()
        child.wait()
        raise
    return child, time.time()


def function_lines(name: str) -> range:
    """The lines of the target's function (or method) `name`."""
    for node in ast.walk(ast.parse(TARGET.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return range(node.lineno, (node.end_lineno or node.lineno) + 1)
    raise AssertionError(name)


def record_busy(agent: Agent, python: Path, spy: str, output: Path) -> tuple[int, float, str]:
    """The target's busy loop sampled by the agent and recorded by py-spy for SECONDS,
    drained and shipped; the target's pid, when the window began, py-spy's folded text."""
    child, since = start_watched(agent, python)
    try:
        command = [spy, "record", "--nonblocking", "-r", str(RATE), "-d", str(SECONDS)]
        subprocess.run(
            [*command, "-f", "raw", "-o", str(output), "-p", str(child.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=True,
        )
    finally:
        child.kill()
        child.wait()
    drain_and_ship(agent)
    return child.pid, since, output.read_text()


def inclusive_shares(stacks: list[tuple[list[str], int]]) -> dict[str, float]:
    """As spy_shares, from the server's folded stacks (frames named `qualname`)."""
    text = "\n".join(f"{';'.join(frames)} {value}" for frames, value in stacks)
    return spy_shares(text)


@pytest.mark.skipif(not RECENT, reason="no CPython 3.10+ here")
@pytest.mark.parametrize(("label", "python"), RECENT, ids=[label for label, _ in RECENT])
def test_flame_graph_shows_the_python_functions_as_py_spy_does(
    module_server: str, agent: Agent, label: str, python: Path, tmp_path: Path
) -> None:
    spy = py_spy()
    if spy is None:
        pytest.skip("py-spy is not installed (pip install podflame[dev])")
    pid, started, theirs_folded = record_busy(agent, python, spy, tmp_path / "py-spy.txt")
    stacks = folded(module_server, pid, since=started)
    ours, theirs = inclusive_shares(stacks), spy_shares(theirs_folded)
    gap = max(abs(ours[name] - theirs[name]) for name in FUNCTIONS)
    print(f"{label}: ours {ours}, py-spy {theirs}, largest gap {gap:.1f}")
    assert gap <= 10.0, (ours, theirs)

    # Mixed stacks: the interpreter's loop gives way to the Python frames, and what
    # zlib.compress runs sits above worker_step, the Python function that called it.
    total = sum(value for _, value in stacks)
    looping = sum(v for frames, v in stacks if any("EvalFrame" in f for f in frames))
    assert looping <= 0.1 * total, [s for s in stacks if "EvalFrame" in ";".join(s[0])][:3]
    above = [
        frames[frames.index("worker_step") + 1 :] for frames, _ in stacks if "worker_step" in frames
    ]
    zlib = ("compress", "deflate", "zlib", "libz")
    assert any(any(z in f for z in zlib for f in rest) for rest in above), above[:5]

    flame = httpx.get(
        module_server + "/api/v1/flamegraph",
        params={"query": f'{{pid="{pid}"}}', "from": f"{started:.3f}"},
        timeout=30,
    ).json()
    names = {name.rsplit(".", 1)[-1] for name in flame["names"]}
    assert set(FUNCTIONS) <= names, flame["names"][:50]


@pytest.mark.skipif(not RECENT, reason="no CPython 3.10+ here")
def test_pprof_carries_python_files_and_lines(module_server: str, agent: Agent) -> None:
    label, python = RECENT[-1]
    child, started = start_watched(agent, python)
    time.sleep(1.5)
    child.kill()
    child.wait()
    drain_and_ship(agent)
    params = {"query": f'{{pid="{child.pid}"}}', "from": f"{started:.3f}", "format": "pprof"}
    data = httpx.get(module_server + "/api/v1/export", params=params, timeout=30).content
    profile = decode(data, 64 << 20)
    message, strings = profile.message, profile.strings
    functions = {f.id: f for f in message.function}
    locations = {location.id: location for location in message.location}
    lines: dict[str, set[int]] = collections.defaultdict(set)
    named = total = 0
    for sample in message.sample:
        total += sample.value[0]
        python_frames = False
        for location in (locations[i] for i in sample.location_id):
            for line in location.line:
                function = functions[line.function_id]
                if strings[function.filename] == str(TARGET):
                    python_frames = True
                    lines[strings[function.name]].add(line.line)
        named += sample.value[0] if python_frames else 0
    assert named >= 0.9 * total, (label, named, total)
    qualname = "Omicron.pack" if "3.10" not in label else "pack"
    assert lines[qualname] and lines[qualname] <= set(function_lines("pack")), lines
    assert lines["worker_step"] <= set(function_lines("worker_step")), lines


def named_share(stacks: list[tuple[list[str], int]], functions: tuple[str, ...]) -> float:
    total = sum(value for _, value in stacks)
    named = sum(v for frames, v in stacks if any(f.rsplit(".", 1)[-1] in functions for f in frames))
    return named / total if total else 0.0


@pytest.mark.skipif(not RECENT, reason="no CPython 3.10+ here")
def test_a_process_gone_before_the_drain_keeps_its_python_names(
    module_server: str, agent: Agent
) -> None:
    """Under a second of life, exited before the drain: its code objects were named while
    it lived, and nothing of it stays in the BPF program's process map."""
    label, python = RECENT[-1]
    started = time.time()
    child = subprocess.Popen([str(python), str(TARGET), "brief", "0.7"])
    assert child.wait(30) == 0
    assert not Path(f"/proc/{child.pid}").exists()
    assert ctypes.c_uint32(child.pid) not in agent.sampler.table("py_procs")
    drain_and_ship(agent)
    stacks = folded(module_server, child.pid, since=started)
    share = named_share(stacks, FUNCTIONS)
    print(f"{label}: {share:.0%} of {sum(v for _, v in stacks)} ns named")
    # Some of its samples come before the agent found its interpreter (at its first
    # sample, milliseconds on an idle machine): most are named.
    assert share >= 0.5, stacks[:10]
    for _ in range(3):  # the table forgets an ended process at its second idle drain
        drain_and_ship(agent)
    assert agent.python is not None and not agent.python.watches(child.pid)


@pytest.mark.skipif(not RECENT, reason="no CPython 3.10+ here")
def test_each_thread_has_its_own_python_stack(module_server: str, agent: Agent) -> None:
    """Four busy threads and 20 idle ones (started later, so nearer the head of the
    interpreter's thread list): every sample names the one busy function of its thread."""
    label, python = RECENT[-1]
    spins = ("spin_a", "spin_b", "spin_c", "spin_d")
    with target(python, "crowd", "20") as (process, _):
        deadline = time.monotonic() + 30
        assert agent.python is not None
        while not agent.python.watches(process.pid):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        drain_and_ship(agent)
        since = time.time()
        time.sleep(2)
        drain_and_ship(agent)
    stacks = folded(module_server, process.pid, since=since)
    inclusive = collections.Counter[str]()
    for frames, value in stacks:
        ran = [spin for spin in spins if spin in frames]
        assert len(ran) <= 1, frames
        inclusive.update(dict.fromkeys(ran, value))
    total = sum(value for _, value in stacks)
    print(f"{label}: { {k: round(v / total, 2) for k, v in inclusive.items()} }")
    assert all(inclusive[spin] >= 0.05 * total for spin in spins), inclusive
    assert sum(inclusive.values()) >= 0.9 * total


@pytest.mark.skipif(not RECENT, reason="no CPython 3.10+ here")
def test_metrics_count_python_processes_samples_and_refusals(agent: Agent, tmp_path: Path) -> None:
    """After the tests above: processes walked, samples with Python frames; and a fake
    interpreter (a copy of `sleep` named python3.12) refused as not CPython."""
    fake = tmp_path / "python3.12"
    shutil.copy("/bin/sleep", fake)
    impostor = subprocess.Popen([str(fake), "30"])
    try:
        time.sleep(0.1)  # exec'd
        assert agent.python is not None
        with agent.lock:  # as the announcement thread does (it sleeps: never sampled)
            agent.python.announce(impostor.pid, 1)
            for _ in range(MAX_LOOKS):  # not CPython: perhaps libpython is not mapped yet
                agent.python.look_again(now=float("inf"))
        assert not agent.python.watches(impostor.pid)
    finally:
        impostor.kill()
        impostor.wait()
    values = parse_metrics(render_metrics(agent))
    assert values['podflame_agent_python_processes_refused_total{reason="not_cpython"}'] >= 1
    assert values["podflame_agent_python_processes_attached_total"] >= 1
    assert values['podflame_agent_python_samples_total{frames="python"}'] > 0
    assert 'podflame_agent_python_walk_errors_total{reason="no_thread_state"}' in values
    assert "podflame_agent_python_processes" in values
