"""End to end on the real kernel: BPF agent -> HTTP -> server -> chDB -> API.

A C program splits its CPU time 70 % / 30 % between burn_a and burn_b. The
real agent and server run as processes; the API must report the split, the
function names and the CPU time the program actually used.
"""

import httpx
import pytest

from tests.e2e.conftest import Profiled

pytestmark = [pytest.mark.bpf, pytest.mark.usefixtures("require_bpf")]


def test_cpu_shares_names_and_time(profiled: Profiled) -> None:
    url, pid, cpu_seconds = profiled.url, profiled.pid, profiled.cpu_seconds
    params = {"query": f'{{pid="{pid}"}}', "from": "now-5m", "until": "now", "type": "cpu"}
    top = httpx.get(url + "/api/v1/top", params=params, timeout=30).json()

    assert top["unit"] == "nanoseconds"
    measured = top["total"] / 1e9
    assert measured == pytest.approx(cpu_seconds, rel=0.10), top

    functions = {f["name"]: f for f in top["functions"]}
    assert {"main", "run", "burn_a", "burn_b", "spin"} <= functions.keys(), sorted(functions)
    share_a = functions["burn_a"]["total"] / top["total"]
    share_b = functions["burn_b"]["total"] / top["total"]
    assert share_a == pytest.approx(0.70, abs=0.05)
    assert share_b == pytest.approx(0.30, abs=0.05)
    assert functions["spin"]["self"] == max(f["self"] for f in top["functions"])


def test_folded_export_is_root_first(profiled: Profiled) -> None:
    url, pid = profiled.url, profiled.pid
    params = {"query": f'{{pid="{pid}", comm="burn7030"}}', "format": "folded", "type": "cpu"}
    response = httpx.get(url + "/api/v1/export", params=params, timeout=30)
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert lines
    burn_a = [line for line in lines if ";run;burn_a;spin" in line]
    assert burn_a, lines[:10]
    stack, value = burn_a[0].rsplit(" ", 1)
    assert int(value) > 0
    assert stack.split(";").index("main") < stack.split(";").index("burn_a")
