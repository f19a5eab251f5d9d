"""The whole agent in this process, on the real kernel, shipping to a real server.

Covers what only shows across stages: processes that exit before the drain,
exec (one pid, two images), kernel frames, and the /metrics endpoint.
"""

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from podflame.agent.agent import Agent, build_agent
from podflame.agent.batch import StackSymbolizer
from podflame.agent.pods import PodRef
from podflame.agent.programs import Announcement
from podflame.agent.settings import AgentSettings
from podflame.model import is_kernel_frame
from podflame.symbolizer import ProcessImage, Symbol
from podflame.symbolizer.perfmap import PerfMaps
from tests.conftest import compile_c
from tests.fixtures import FIXTURES, build_burn7030
from tests.kube_apiserver import fake_kube_api, pod_json

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]


@contextmanager
def running_agent(server: str, **settings: object) -> Iterator[Agent]:
    """An agent that drains only when stopped, unless `interval` says otherwise."""
    values = {"server": server, "frequency": 199, "interval": 60, "metrics_port": 0, **settings}
    agent = build_agent(AgentSettings.model_validate(values))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    try:
        yield agent
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def quiet_agent(module_server: str, require_bpf: None) -> Iterator[Agent]:
    """An agent whose loop does not drain while the module runs: a test drains it with
    drain_and_ship(), so it knows what ran (or exited) before that drain."""
    with running_agent(module_server, interval=600) as agent:  # the most allowed
        yield agent


@pytest.fixture(scope="module")
def frequent_agent(module_server: str, require_bpf: None) -> Iterator[Agent]:
    """An agent draining every half second, shared by the tests that need drains while
    their process runs."""
    with running_agent(module_server, interval=0.5) as agent:
        yield agent


def drain_and_ship(agent: Agent) -> None:
    """One drain, as the agent's loop makes it, then until the server has acknowledged it."""
    agent.tick()
    wait_until_shipped(agent)


def wait_for_drains(agent: Agent, count: int) -> None:
    """Until `count` more drains of the agent's own loop have been shipped."""
    # Drain n+1 begins after drain n has submitted its batch; then the queue holds it.
    target = agent.stats.drains + count + 1
    deadline = time.monotonic() + 60
    while agent.stats.drains < target:
        assert time.monotonic() < deadline, f"{agent.stats.drains} drains of {target}"
        time.sleep(0.05)
    wait_until_shipped(agent)


def wait_until_shipped(agent: Agent) -> None:
    deadline = time.monotonic() + 60
    while len(agent.shipper.queue):
        assert time.monotonic() < deadline, "the server did not acknowledge the batches"
        time.sleep(0.05)


def folded(server: str, pid: int, since: float | None = None) -> list[tuple[list[str], int]]:
    """The pid's folded stacks, drained in the last 10 minutes or since `since` (epoch s)."""
    start = "now-10m" if since is None else f"{since:.3f}"
    params = {"query": f'{{pid="{pid}"}}', "from": start, "format": "folded"}
    text = httpx.get(server + "/api/v1/export", params=params, timeout=30).text
    lines = [line.rsplit(" ", 1) for line in text.splitlines()]
    return [(stack.split(";"), int(value)) for stack, value in lines]


def test_process_exiting_before_the_drain_keeps_its_names(
    module_server: str, quiet_agent: Agent, tmp_path: Path
) -> None:
    binary = build_burn7030(tmp_path / "burn7030")
    started = time.time()
    workload = subprocess.Popen([str(binary), "1.5"], stdout=subprocess.DEVNULL)
    assert workload.wait(30) == 0  # exited and reaped before the agent drains
    assert not Path(f"/proc/{workload.pid}").exists()
    drain_and_ship(quiet_agent)
    stacks = folded(module_server, workload.pid, since=started)
    names = {frame for stack, _ in stacks for frame in stack}
    assert {"main", "run", "burn_a", "burn_b", "spin"} <= names, stacks[:5]


def test_exec_starts_a_new_image_under_the_same_pid(
    module_server: str, quiet_agent: Agent, tmp_path: Path
) -> None:
    exec_after = compile_c(FIXTURES / "exec_after.c", tmp_path / "exec_after")
    burn = build_burn7030(tmp_path / "burn7030")
    started = time.time()
    process = subprocess.Popen([str(exec_after), "1.0", str(burn), "1.0"], stdout=subprocess.PIPE)
    process.communicate(timeout=30)
    drain_and_ship(quiet_agent)
    stacks = folded(module_server, process.pid, since=started)
    before = [stack for stack, _ in stacks if "before_exec" in stack]
    after = [stack for stack, _ in stacks if "burn_a" in stack]
    assert before and after, stacks[:10]
    assert not [stack for stack in stacks if "before_exec" in stack[0] and "burn_a" in stack[0]]
    # The new image's names are in the user frames. Kernel frames may sit on top: a sample
    # can land in an interrupt taken in spin() (reschedule IPIs, frequent on a busy machine).
    user = [[frame for frame in stack if not is_kernel_frame(frame)] for stack in after]
    assert all(frames[-3:] == ["run", "burn_a", "spin"] for frames in user), after[:3]


def test_kernel_frames_sit_below_user_frames(
    module_server: str, quiet_agent: Agent, tmp_path: Path
) -> None:
    binary = compile_c(FIXTURES / "syscall_loop.c", tmp_path / "syscall_loop")
    started = time.time()
    process = subprocess.Popen([str(binary), "1.5"])
    process.wait(30)
    drain_and_ship(quiet_agent)
    stacks = folded(module_server, process.pid, since=started)
    in_kernel = [(stack, value) for stack, value in stacks if stack[-1].endswith("_[k]")]
    kernel_time = sum(value for _, value in in_kernel)
    assert kernel_time > sum(value for _, value in stacks) / 2, "reading /dev/zero is kernel time"
    below_main = 0
    for stack, value in in_kernel:
        first_kernel = next(i for i, frame in enumerate(stack) if frame.endswith("_[k]"))
        assert all(frame.endswith("_[k]") for frame in stack[first_kernel:]), stack
        # libc's read() keeps no frame pointer, so the walk skips its caller
        # read_zeros(); main() is there unless the process is exiting (no user
        # memory left to walk).
        below_main += value if "main" in stack[:first_kernel] else 0
    assert below_main > 0.9 * kernel_time


def test_kernel_stacks_can_be_turned_off(module_server: str, tmp_path: Path) -> None:
    binary = compile_c(FIXTURES / "syscall_loop.c", tmp_path / "syscall_loop")
    started = time.time()
    with running_agent(module_server, kernel_stacks=False, network=False):  # CPU stacks only
        process = subprocess.Popen([str(binary), "1.5"])
        process.wait(30)
    stacks = [stack for stack, _ in folded(module_server, process.pid, since=started)]
    assert stacks
    assert not [frame for stack in stacks for frame in stack if frame.endswith("_[k]")]


def test_metrics_endpoint_reports_the_stages(frequent_agent: Agent, tmp_path: Path) -> None:
    binary = build_burn7030(tmp_path / "burn7030")
    agent = frequent_agent
    drains_before = agent.stats.drains  # the agent is shared: its counters run on
    workload = subprocess.Popen(
        [str(binary), "-w", "1.5"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert workload.stdout is not None
    workload.stdout.readline()  # done burning; alive until stdin closes
    wait_for_drains(agent, 2)
    text = render_metrics(agent)
    workload.communicate(timeout=10)
    values = parse_metrics(text)
    assert values["podflame_agent_samples_total"] > 0
    assert values["podflame_agent_drains_total"] >= drains_before + 2
    assert 'podflame_agent_samples_dropped_total{reason="count_map"}' in values
    assert values['podflame_agent_stage_seconds_total{stage="build"}'] > 0
    assert values["podflame_agent_symbolizer_frames_resolved_total"] > 0
    # Labels in name order, as prometheus_client writes them.
    ratio = f'podflame_agent_shallow_stack_ratio{{comm="burn7030",pid="{workload.pid}"}}'
    assert values[ratio] < 0.05, "a frame-pointer build walks past its first frame"


def test_a_non_utf8_executable_name_costs_nothing(
    module_server: str, frequent_agent: Agent, tmp_path: Path
) -> None:
    """A stripped program whose file name is not UTF-8 once stopped the agent (issue 16):
    its frames are now shipped with the name escaped, and the loop goes on."""
    agent = frequent_agent
    burn = build_burn7030(tmp_path / "burn7030")
    odd = os.path.join(os.fsencode(tmp_path), b"pfbar_\xff\xfe")
    shutil.copy(burn, odd)
    # Without its build-id too: the symbol cache knows burn7030's by its build-id.
    subprocess.run(["strip", "--remove-section=.note.gnu.build-id", odd], check=True)
    errors = dict(agent.stats.loop_errors.counts), dict(agent.stats.process_errors.counts)
    started = time.time()
    odd_process = subprocess.Popen([odd, "1.5"], stdout=subprocess.DEVNULL)
    assert odd_process.wait(30) == 0
    wait_for_drains(agent, 2)
    ordinary = subprocess.Popen([str(burn), "1.0"], stdout=subprocess.DEVNULL)  # started after
    assert ordinary.wait(30) == 0
    wait_for_drains(agent, 2)
    assert {"burn_a", "spin"} <= {
        f for stack, _ in folded(module_server, ordinary.pid) for f in stack
    }
    assert pid_of(module_server, ODD_COMM, since=started) == odd_process.pid  # its comm label
    frames = {f for stack, _ in folded(module_server, odd_process.pid, started) for f in stack}
    assert any(frame.startswith(ODD_COMM + "+0x") for frame in frames), frames
    # Escaped where the text was read: nothing needed catching.
    assert (agent.stats.loop_errors.counts, agent.stats.process_errors.counts) == errors


class KernelNamesFail:
    """The real symbolizer, but naming kernel frames fails: a whole drain fails."""

    def __init__(self, symbolizer: StackSymbolizer) -> None:
        self.symbolizer = symbolizer

    def kernel_symbols(self, addresses: Sequence[int]) -> list[Symbol]:
        raise RuntimeError("kernel symbols broke")

    def resolve_symbols(self, image: ProcessImage | None, addresses: Sequence[int]) -> list[Symbol]:
        return self.symbolizer.resolve_symbols(image, addresses)


def test_a_failed_drain_is_counted_and_the_next_one_ships(
    module_server: str, quiet_agent: Agent, tmp_path: Path
) -> None:
    agent, symbolizer = quiet_agent, quiet_agent.builder.symbolizer
    binary = build_burn7030(tmp_path / "burn7030")
    failed = agent.stats.loop_errors.counts["drain"]
    agent.builder.symbolizer = KernelNamesFail(symbolizer)
    try:
        first = subprocess.Popen([str(binary), "0.5"], stdout=subprocess.DEVNULL)
        assert first.wait(30) == 0
        agent.tick()  # raises nothing: counted
    finally:
        agent.builder.symbolizer = symbolizer
    assert agent.stats.loop_errors.counts["drain"] == failed + 1
    started = time.time()
    second = subprocess.Popen([str(binary), "0.5"], stdout=subprocess.DEVNULL)
    assert second.wait(30) == 0
    drain_and_ship(agent)
    assert "burn_a" in {f for stack, _ in folded(module_server, second.pid, started) for f in stack}


def test_a_failing_announcement_poll_is_counted_and_the_loop_goes_on(quiet_agent: Agent) -> None:
    agent, stop, calls = quiet_agent, threading.Event(), []
    failed = agent.stats.loop_errors.counts["announce"]

    def poll(timeout_ms: int) -> list[Announcement]:
        calls.append(timeout_ms)
        if len(calls) == 1:
            raise OSError("ring buffer broke")
        stop.set()
        return []

    agent._announce_loop(stop, poll)  # returns once stopped
    assert len(calls) == 2
    assert agent.stats.loop_errors.counts["announce"] == failed + 1


# The odd program's name, b"pfbar_\xff\xfe", as the agent shows it (backslashes and all).
ODD_COMM = r"pfbar_\xff\xfe"


def pid_of(server: str, comm: str, since: float) -> int:
    """The pid of the one process with this comm label (a raw string: no escapes)."""
    params = {"query": f"{{comm=`{comm}`}}", "from": f"{since:.3f}"}
    response = httpx.get(server + "/api/v1/labels/pid/values", params=params, timeout=30)
    assert response.status_code == 200, response.text
    (pid,) = response.json()["values"]
    return int(pid)


def render_metrics(agent: Agent) -> str:
    from podflame.agent.metrics import MetricsServer

    server = MetricsServer("127.0.0.1", 0, agent.registry)
    server.start()
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    finally:
        server.close()
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def parse_metrics(text: str) -> dict[str, float]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def test_library_loaded_after_the_first_sample_is_named(
    module_server: str, frequent_agent: Agent, tmp_path: Path
) -> None:
    library = compile_c(
        FIXTURES / "symbolizer" / "libburn.c", tmp_path / "libburn.so", "-shared", "-fPIC"
    )
    program = compile_c(FIXTURES / "dlopen_later.c", tmp_path / "dlopen_later", "-ldl")
    started = time.time()
    # The library part outlasts several drains, however long a tick takes next to
    # the network side: a drain must see the new addresses while the process lives.
    process = subprocess.Popen([str(program), str(library), "1.0", "3.0"])
    assert process.wait(30) == 0
    wait_for_drains(frequent_agent, 1)  # a drain after it exited: the refresh came before
    stacks = folded(module_server, process.pid, since=started)
    names = {frame for stack, _ in stacks for frame in stack}
    assert {"before_dlopen", "lib_burn"} <= names, sorted(names)


def test_kubernetes_metadata_is_wired_in(module_server: str, tmp_path: Path) -> None:
    """build_agent starts the pod watch: pod_by_ip for the network tracer, counters at /metrics."""
    pod = pod_json("db-0", "00000000-0000-4000-8000-000000000001", "node-p", [], ips=["10.9.0.7"])
    with fake_kube_api() as api:
        api.add_pod(pod)
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        with running_agent(module_server, kubeconfig=kubeconfig, node_name="node-p") as agent:
            assert agent.kubernetes is not None
            deadline = time.monotonic() + 30
            while agent.kubernetes.pod_by_ip("10.9.0.7") is None and time.monotonic() < deadline:
                time.sleep(0.05)
            found = agent.kubernetes.pod_by_ip("10.9.0.7")
            values = parse_metrics(render_metrics(agent))
        with running_agent(module_server, kubernetes=False, network=False) as agent:
            assert agent.kubernetes is None
    assert found == PodRef("default", "db-0", "Pod", "db-0")
    assert values["podflame_agent_kubernetes_lists_total"] == 1
    assert values["podflame_agent_kubernetes_watches_total"] >= 1


# Over 8 MiB of perf map: more than the agent reads of one (perfmap.PerfMaps), so
# reading it is counted (perf_maps_truncated) and costs what the most a file can.
PERF_MAP_LINES = 300_000


def _perf_maps_truncated(agent: Agent) -> int:
    return agent.symbolizer.stats.perf_maps_truncated


def _longest_wait_for_the_lock(agent: Agent, until: Callable[[], bool], seconds: float) -> float:
    """Take and release the agent's lock, as a drain or an announcement does, until
    `until()`; the longest wait for it (inf if `until()` stayed False for `seconds`)."""
    longest, deadline = 0.0, time.monotonic() + seconds
    while not until():
        if time.monotonic() > deadline:
            return float("inf")
        asked = time.perf_counter()
        with agent.lock:
            longest = max(longest, time.perf_counter() - asked)
        time.sleep(0.002)
    return longest


def _perf_map_read_once_more(agent: Agent) -> Callable[[], bool]:
    before = _perf_maps_truncated(agent)
    return lambda: _perf_maps_truncated(agent) > before


def _time_to_read_perf_map(pid: int) -> float:
    started = time.perf_counter()
    assert PerfMaps().get(pid) is not None
    return time.perf_counter() - started


def test_a_huge_perf_map_never_holds_the_agents_lock(quiet_agent: Agent, tmp_path: Path) -> None:
    """Capturing a JIT process reads only /proc: its perf map (over the 8 MiB the agent
    reads, a hostile container's choice) is read off the agent's lock, so a drain never
    waits for it."""
    binary = compile_c(FIXTURES / "jit_spin.c", tmp_path / "jit_spin")
    for _ in range(4):  # a sample before main() mapped its code: captured without it
        read = _perf_map_read_once_more(quiet_agent)
        with subprocess.Popen(
            [str(binary), str(PERF_MAP_LINES), "0.5"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdin is not None and process.stdout is not None
            try:
                assert process.stdout.readline().startswith("ready ")
                waited = _longest_wait_for_the_lock(quiet_agent, read, 30)
                parse = _time_to_read_perf_map(process.pid)
            finally:
                process.stdin.close()
                Path(f"/tmp/perf-{process.pid}.map").unlink(missing_ok=True)
        if waited != float("inf"):
            break
    assert waited != float("inf"), "the agent never read the perf map"
    assert parse > 0.1, "the perf map was too small to tell"
    print(f"longest wait for the lock {waited:.4f} s; reading the perf map {parse:.3f} s")
    assert waited < parse / 10, f"a drain waited {waited:.3f} s; the perf map takes {parse:.3f} s"
