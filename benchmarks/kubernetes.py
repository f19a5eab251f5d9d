"""What pod metadata costs the agent: memory, CPU per watch event, label lookups.

`python -m benchmarks.kubernetes` prints a Markdown table (docs/kubernetes.md
quotes it). The in-test API server (tests/kube_apiserver.py) runs in this
process with PODS pods, each with three containers and a Deployment owner; the
agent's metadata code runs in a child process, so its memory and CPU are its
own: resident memory before and after the client is imported and the pods are
listed, CPU of the watch thread per MODIFIED event, and the time to label one
process (host + cgroup + pod providers, as build_agent composes them).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podflame.agent.procfs import read_start_ticks
from tests.kube_apiserver import ContainerSpec, FakeKubeApi, owned_object, pod_json

if TYPE_CHECKING:
    from podflame.agent.kubernetes import KubernetesMetadata

PODS = 110  # the kubelet's default maximum per node
EVENTS = 2000
LOOKUPS = 100_000
NODE = "bench-node"


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def cid(n: int, c: int) -> str:
    return f"{n:056x}{c:08x}"


def bench_pod(n: int, generation: int = 0) -> dict[str, Any]:
    containers = [ContainerSpec(f"c{c}", cid(n, c), image=f"app/svc{n}:1.{c}") for c in range(3)]
    labels = {"app.kubernetes.io/name": f"svc{n % 20}", "pod-template-hash": "5d8f"}
    pod = pod_json(
        f"svc{n % 20}-5d8f-{n:05d}",
        uid(n),
        NODE,
        containers,
        namespace=f"ns{n % 5}",
        labels=labels,
        owner=("ReplicaSet", f"svc{n % 20}-5d8f"),
        ips=[f"10.1.{n // 250}.{n % 250}"],
    )
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True", "generation": generation}]
    return pod


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def thread_cpu_seconds(tid: int) -> float:
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def child(kubeconfig: Path) -> None:
    """The measured side: the agent's metadata code, alone in this process."""
    from podflame.agent.cgroups import CgroupResolver
    from podflame.agent.pods import pod_label_names
    from podflame.agent.settings import DEFAULT_POD_LABELS

    before = rss_mb()
    from podflame.agent.kubernetes import start_metadata

    imported = rss_mb()
    names = pod_label_names(DEFAULT_POD_LABELS.split(","))
    metadata = start_metadata(kubeconfig, NODE, names, 600)
    assert metadata is not None and metadata._thread is not None
    while len(metadata.index) < PODS:
        time.sleep(0.01)
    report(before=before, imported=imported, listed=rss_mb())
    sys.stdin.readline()  # the parent sends the events now
    tid = metadata._thread.native_id
    assert tid is not None
    start, seen = thread_cpu_seconds(tid), metadata.stats.events
    while metadata.stats.events < seen + EVENTS:
        time.sleep(0.01)
    cpu = thread_cpu_seconds(tid) - start
    after_events = rss_mb()
    lookup = label_seconds(metadata)
    pid = os.getpid()
    ticks = read_start_ticks(pid)
    resolver = CgroupResolver()
    started = time.perf_counter()
    for _ in range(2000):
        resolver.read(pid, ticks)
    read = (time.perf_counter() - started) / 2000
    metadata.close()
    report(cpu=cpu, after_events=after_events, lookup=lookup, read=read)


def label_seconds(metadata: "KubernetesMetadata") -> float:
    """Seconds to label one process, with the providers build_agent composes."""
    from podflame.agent.cgroups import CgroupIdentity, CgroupResolver
    from podflame.agent.kubernetes import PodLabels
    from podflame.agent.labels import CgroupLabels, CombinedLabels, HostLabels, ProcessIdentity

    resolver = CgroupResolver()
    providers = [HostLabels(NODE), CgroupLabels(resolver), PodLabels(metadata.index, resolver)]
    labels = CombinedLabels(providers)
    processes = [
        ProcessIdentity(1000 + n, "svc", 1, CgroupIdentity("/x", uid(n), cid(n, 1)))
        for n in range(PODS)
    ]
    assert labels.labels(processes[0])["container"] == "c1"
    started = time.perf_counter()
    for i in range(LOOKUPS):
        labels.labels(processes[i % PODS])
    return (time.perf_counter() - started) / LOOKUPS


def report(**figures: float) -> None:
    print(json.dumps(figures), flush=True)


def measure() -> dict[str, float]:
    api = FakeKubeApi()
    for n in range(20):
        owner = ("Deployment", f"svc{n}")
        api.add_object(
            "replicasets", owned_object("ReplicaSet", f"ns{n % 5}", f"svc{n}-5d8f", owner)
        )
    for n in range(PODS):
        api.add_pod(bench_pod(n))
    api.start()
    try:
        with tempfile.TemporaryDirectory() as directory:
            kubeconfig = api.kubeconfig(Path(directory) / "kubeconfig")
            return _run_child(api, kubeconfig)
    finally:
        api.stop()


def _run_child(api: FakeKubeApi, kubeconfig: Path) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.kubernetes", "--child", str(kubeconfig)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    results: dict[str, float] = json.loads(child.stdout.readline())
    child.stdin.write("go\n")
    child.stdin.flush()
    for n in range(EVENTS):
        api.modify_pod(bench_pod(n % PODS, generation=n))
    results.update(json.loads(child.stdout.readline()))
    child.wait(60)
    return results


def table(r: dict[str, float]) -> list[str]:
    imported, listed = r["imported"] - r["before"], r["listed"] - r["imported"]
    return [
        "| what | figure |",
        "|---|---|",
        f"| resident memory: agent modules without the client | {r['before']:.1f} MB |",
        f"| + kubernetes client and pod metadata code imported | +{imported:.1f} MB |",
        f"| + {PODS} pods listed and indexed (3 containers each) | +{listed:.1f} MB |",
        f"| + {EVENTS} MODIFIED events | +{r['after_events'] - r['listed']:.1f} MB |",
        f"| watch thread CPU per MODIFIED event | {r['cpu'] / EVENTS * 1e3:.2f} ms |",
        f"| labels of one process (node, comm, pid, cgroup, pod) | {r['lookup'] * 1e6:.1f} µs |",
        f"| reading and parsing /proc/PID/cgroup (once per process) | {r['read'] * 1e6:.1f} µs |",
    ]


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(Path(sys.argv[2]))
        return
    started = time.monotonic()
    results = measure()
    print("\n".join(table(results)))
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
