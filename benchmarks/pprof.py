"""Server CPU to decode a pushed pprof and turn it into batches (issue 16, issue 18).

Two Connect pushes go through server/pyroscope.py's `push_batches` (gzip, protobuf
decoding, the expansion limits, stacks and batches; not the store):
- the hostile one security.md names: 3,000 samples of the same 1,025 locations,
  about 50 KB gzip-compressed, within every default limit, cut to 1,024 frames;
- one shaped like a Go SDK's 10 s CPU profile: 2 sample types, 2,000 stacks 10 to 60
  frames deep over 3,000 locations and 1,500 functions in 12 mappings.
CPU is this process's (time.process_time), the median of `repeats` runs, with its
cost per KB of the decompressed profile. Run: python -m benchmarks.pprof
"""

import argparse
import gzip
import random
import statistics
import time
from collections.abc import Callable

from podflame.model import pprof
from podflame.model import pprof_pb2 as pb
from podflame.model.pprof import StringTable
from podflame.server import push_pb2
from podflame.server.limits import IngestLimits
from podflame.server.pyroscope import (
    check_profiles,
    decode_profile,
    decode_push_proto,
    push_batches,
)

LABELS = (("__name__", "process_cpu"), ("service_name", "bench"))
START_NS = 1_700_000_000 * 10**9
PERIOD = 10_000_000


def push(profile: pb.Profile) -> bytes:
    """A PushRequest of one series holding `profile`, gzip-compressed."""
    request = push_pb2.PushRequest()
    series = request.series.add()
    for name, value in LABELS:
        series.labels.add(name=name.encode(), value=value.encode())
    series.samples.add(raw_profile=gzip.compress(pprof.encode(profile)))
    return request.SerializeToString()


def _profile(strings: StringTable, types: list[tuple[str, str]]) -> pb.Profile:
    message = pb.Profile(time_nanos=START_NS, duration_nanos=10**10, period=PERIOD)
    for name, unit in types:
        message.sample_type.add(type=strings(name), unit=strings(unit))
    message.period_type.CopyFrom(message.sample_type[-1])
    return message


def hostile_profile(samples: int = 3000, depth: int = 1025) -> pb.Profile:
    strings = StringTable()
    message = _profile(strings, [("cpu", "nanoseconds")])
    for i in range(1, depth + 1):
        message.function.add(id=i, name=strings(f"f{i}"))
        message.location.add(id=i, line=[pb.Line(function_id=i)])
    ids = list(range(1, depth + 1))
    for _ in range(samples):
        message.sample.add(location_id=ids, value=[PERIOD])
    message.string_table.extend(strings.table())
    return message


def sdk_profile(seed: int = 18, stacks: int = 2000) -> pb.Profile:
    rng = random.Random(seed)
    strings = StringTable()
    message = _profile(strings, [("samples", "count"), ("cpu", "nanoseconds")])
    for i in range(1, 13):
        message.mapping.add(
            id=i,
            memory_start=i << 32,
            memory_limit=(i << 32) + (1 << 24),
            filename=strings(f"/usr/lib/lib{i}.so"),
        )
    for i in range(1, 1501):
        name = strings(f"github.com/shop/pkg{i % 40}.(*Handler{i % 97}).Method{i}")
        message.function.add(id=i, name=name, system_name=name, filename=strings(f"pkg{i}.go"))
    for i in range(1, 3001):
        mapping = 1 + i % 12
        message.location.add(
            id=i,
            mapping_id=mapping,
            address=(mapping << 32) + 16 * i,
            line=[pb.Line(function_id=1 + (i * 7) % 1500, line=10 + i % 300)],
        )
    for _ in range(stacks):
        ids = [rng.randint(1, 3000) for _ in range(rng.randint(10, 60))]
        count = rng.randint(1, 20)
        message.sample.add(location_id=ids, value=[count, count * PERIOD])
    message.string_table.extend(strings.table())
    return message


def cpu_seconds(work: Callable[[], object], repeats: int) -> float:
    """The median CPU time of `work`, over `repeats` runs."""
    times = []
    for _ in range(repeats):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return statistics.median(times)


def ingest(body: bytes) -> None:
    push_batches(decode_push_proto(body), body, 64 << 20, IngestLimits())


def decode(body: bytes) -> None:
    """The first stage of `ingest` alone: decoding and the expansion limits."""
    limits = IngestLimits()
    profiles = [
        decode_profile(data, [64 << 20], limits.pprof())
        for series in decode_push_proto(body)
        for data in series.profiles
    ]
    check_profiles(profiles, limits)


def run(repeats: int = 5) -> list[str]:
    lines = [
        "A pushed pprof through `push_batches` (gzip, protobuf decoding, the expansion",
        "limits, stacks and batches; not the store), and its first stage alone (decoding",
        f"and the limits), median process CPU of {repeats} runs (benchmarks/pprof.py).",
        "",
        "| push | gzip KB | profile KB | CPU ms | decode ms | decode µs per profile KB |",
        "|---|---|---|---|---|---|",
    ]
    pushes = {
        "hostile: 3,000 samples of 1,025 frames": hostile_profile(),
        "Go SDK-like: 2,000 stacks, 2 sample types": sdk_profile(),
    }
    for name, profile in pushes.items():
        body = push(profile)
        raw = len(pprof.encode(profile))
        seconds = cpu_seconds(lambda body=body: ingest(body), repeats)
        decoding = cpu_seconds(lambda body=body: decode(body), repeats)
        lines.append(
            f"| {name} | {len(body) / 1024:.0f} | {raw / 1024:.0f} | {1000 * seconds:.0f}"
            f" | {1000 * decoding:.0f} | {1e6 * decoding / (raw / 1024):.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    print("\n".join(run(parser.parse_args().repeats)))


if __name__ == "__main__":
    main()
