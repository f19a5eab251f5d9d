"""Time the kernel spends in BPF programs, from its own statistics (kernel.bpf_stats_enabled).

Wall-clock comparisons on a shared machine are noisy; the kernel counts each
program's runs and nanoseconds exactly. Statistics are switched on only
while measuring (they cost two clock reads per run) and read with bpftool.
"""

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STATS_SWITCH = Path("/proc/sys/kernel/bpf_stats_enabled")


@dataclass(frozen=True)
class ProgramStats:
    run_time_ns: int
    run_count: int


def available() -> bool:
    return shutil.which("bpftool") is not None and STATS_SWITCH.exists()


def program_id(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("prog_id:"):
            return int(line.split()[1])
    raise LookupError(f"fd {fd} is not a BPF program")


def read(program_ids: list[int]) -> dict[int, ProgramStats]:
    stats = {}
    for program in program_ids:
        shown = subprocess.run(
            ["bpftool", "prog", "show", "id", str(program), "-j"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        info = json.loads(shown)
        stats[program] = ProgramStats(info.get("run_time_ns", 0), info.get("run_cnt", 0))
    return stats


@contextmanager
def enabled() -> Iterator[None]:
    previous = STATS_SWITCH.read_text().strip()
    STATS_SWITCH.write_text("1")
    try:
        yield
    finally:
        STATS_SWITCH.write_text(previous)
