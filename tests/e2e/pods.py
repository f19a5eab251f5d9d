"""Real workloads profiled by the real agent, attributed to made-up Kubernetes pods.

There is no kubelet or API server here, so the agent's label seam (LabelProvider) gets a
provider that adds pod labels to the processes the test starts, by pid, on top of the
host labels every sample carries: the stand-in for the Kubernetes attribution of issue 5.
Everything else is real: BPF sampling (and network tracing where the agent has it),
symbolization, batches over HTTP, chDB.

The provider goes in where the composition root (agent.build_agent) makes its host
labels, so every stage that labels processes (CPU batches, network batches) gets it.
"""

import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from pydantic import AnyHttpUrl

from podflame.agent import agent as agent_module
from podflame.agent.labels import HostLabels, ProcessIdentity
from podflame.agent.settings import AgentSettings

FREQUENCY = 99
INTERVAL_SECONDS = 2.0


@dataclass(frozen=True)
class Pod:
    namespace: str
    workload: str
    pod: str
    container: str
    extra: dict[str, str] = field(default_factory=dict)  # pod labels such as version

    def labels(self) -> dict[str, str]:
        identity = {
            "namespace": self.namespace,
            "workload_kind": "Deployment",
            "workload": self.workload,
            "pod": self.pod,
            "container": self.container,
        }
        return {**identity, **self.extra}


class PodLabels:
    """Host labels for every process, plus pod labels for the pids registered here."""

    def __init__(self, host: HostLabels) -> None:
        self.host = host
        self.pods: dict[int, Pod] = {}
        self.lock = threading.Lock()

    def register(self, pid: int, pod: Pod) -> None:
        with self.lock:
            self.pods[pid] = pod

    def labels(self, process: ProcessIdentity) -> dict[str, str]:
        labels = self.host.labels(process)
        with self.lock:
            pod = self.pods.get(process.pid)
        return {**labels, **pod.labels()} if pod else labels


@contextmanager
def pod_agent(
    server_url: str, token: str | None = None, network: bool = True
) -> Iterator[PodLabels]:
    """The agent, sampling in a thread of this process; stopping it ships the last drain.
    `token`: for a server started with --tokens-file. `network=False`: CPU samples only
    (the network programs' compile is a good part of the agent's start)."""
    settings = AgentSettings(
        server=AnyHttpUrl(server_url),
        token=token,
        frequency=FREQUENCY,
        interval=INTERVAL_SECONDS,
        metrics_port=0,
        kubernetes=False,
        network=network,
    )
    provider = PodLabels(HostLabels(node=settings.node_name))
    with mock.patch.object(agent_module, "HostLabels", lambda node: provider):
        agent = agent_module.build_agent(settings)  # compiles and attaches the BPF programs
    providers = getattr(agent.builder.labels, "providers", [agent.builder.labels])
    assert provider in providers, "build_agent no longer labels with HostLabels"
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), name="pod-agent")
    thread.start()
    try:
        yield provider
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the agent did not stop"


@dataclass
class Workload:
    pod: Pod
    command: Sequence[str]
    process: subprocess.Popen[str] | None = None
    report: str = ""  # the workload's own summary line (cpu_seconds=..., calls=...)


def run_workloads(provider: PodLabels, workloads: Sequence[Workload], cwd: Path) -> None:
    """Start every workload in its pod and wait until each reports (or exits).

    Those that report stay alive until `release` closes their stdin, after the agent's
    last drain; one that simply exits is symbolized from the maps cached while it ran.
    """
    for workload in workloads:
        process = subprocess.Popen(
            list(workload.command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        provider.register(process.pid, workload.pod)
        workload.process = process
    for workload in workloads:
        assert workload.process is not None and workload.process.stdout is not None
        workload.report = workload.process.stdout.readline().strip()
        if not workload.report:
            code = workload.process.wait(timeout=60)
            assert code == 0, f"{workload.command} exited with {code}"


def release(workloads: Sequence[Workload]) -> None:
    for workload in workloads:
        if workload.process is not None:
            workload.process.communicate(timeout=10)
