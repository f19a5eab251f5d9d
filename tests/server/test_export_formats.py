"""GET /api/v1/export as folded, pprof and speedscope: the same stacks and values in each."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from podflame.model import pprof
from tests.server.conftest import Ingest, batch, folded

LIMIT = 1 << 24
STACKS = [
    ["main", "work", "burn"],
    ["main", "work"],
    ["main", "sys_write", "vfs_write_[k]", "ext4_file_write_iter_[k]"],
    ["main", "a frame; with spaces"],
]


@pytest.fixture
def stored(ingest: Ingest) -> dict[str, int]:
    period = 10_000_000
    ingest(
        batch(
            STACKS,
            [
                ({"comm": "app", "pid": "1"}, [(0, 3 * period), (1, period), (2, 2 * period)]),
                ({"comm": "other", "pid": "2"}, [(0, period), (3, 5 * period)]),
            ],
        )
    )
    return {
        "main;work;burn": 4 * period,
        "main;work": period,
        "main;sys_write;vfs_write_[k];ext4_file_write_iter_[k]": 2 * period,
        "main;a frame; with spaces": 5 * period,
    }


def test_folded(api: TestClient, stored: dict[str, int]) -> None:
    assert folded(api) == stored


def test_pprof_decodes_to_the_folded_stacks(api: TestClient, stored: dict[str, int]) -> None:
    response = api.get("/api/v1/export", params={"format": "pprof"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="podflame-cpu-')
    assert disposition.endswith('.pb.gz"')
    assert response.content[:2] == b"\x1f\x8b"
    profile = pprof.decode(response.content, LIMIT)
    assert profile.sample_types == (pprof.ValueType("cpu", "nanoseconds"),)
    assert profile.period_type == pprof.ValueType("cpu", "nanoseconds")
    assert profile.message.period == 10_000_000  # every value is a multiple of the agent's period
    assert profile.message.duration_nanos == pytest.approx(3600 * 10**9, rel=0.01)
    totals = pprof.folded_totals(profile, 0)
    assert {";".join(stack): value for stack, value in totals.items()} == stored
    # One location (with one line) per distinct frame name.
    names = [profile.string(function.name) for function in profile.message.function]
    assert len(names) == len(set(names)) == len({f for stack in STACKS for f in stack})
    assert all(len(location.line) == 1 for location in profile.message.location)


def test_pprof_of_nothing_is_an_empty_profile(api: TestClient) -> None:
    response = api.get("/api/v1/export", params={"format": "pprof"})
    assert response.status_code == 200
    profile = pprof.decode(response.content, LIMIT)
    assert list(profile.message.sample) == []
    assert profile.sample_types == (pprof.ValueType("cpu", "nanoseconds"),)


def test_pprof_opens_in_go_tool_pprof(
    api: TestClient, stored: dict[str, int], tmp_path: Path
) -> None:
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI"):
            pytest.fail("go is required in CI (apt-get install golang-go)")
        pytest.skip("go is not installed")
    path = tmp_path / "export.pb.gz"
    path.write_bytes(api.get("/api/v1/export", params={"format": "pprof"}).content)
    top = subprocess.run(
        [go, "tool", "pprof", "-top", str(path)], capture_output=True, text=True, timeout=120
    )
    assert top.returncode == 0, top.stderr
    assert "Type: cpu" in top.stdout
    assert "Total samples = 120ms" in top.stdout
    assert "ext4_file_write_iter_[k]" in top.stdout
    raw = subprocess.run(
        [go, "tool", "pprof", "-raw", str(path)], capture_output=True, text=True, timeout=120
    )
    assert raw.returncode == 0, raw.stderr
    assert "50000000: " in raw.stdout


def test_speedscope_is_a_valid_sampled_profile(api: TestClient, stored: dict[str, int]) -> None:
    response = api.get("/api/v1/export", params={"format": "speedscope"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].endswith('.speedscope.json"')
    document = json.loads(response.content)
    assert document["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = document["shared"]["frames"]
    assert all(set(frame) == {"name"} and isinstance(frame["name"], str) for frame in frames)
    (profile,) = document["profiles"]
    assert profile["type"] == "sampled"
    assert profile["unit"] == "nanoseconds"
    assert len(profile["samples"]) == len(profile["weights"])
    assert all(0 <= i < len(frames) for sample in profile["samples"] for i in sample)
    assert sum(profile["weights"]) == profile["endValue"] - profile["startValue"]
    assert sum(profile["weights"]) == sum(stored.values())
    stacks = {
        ";".join(frames[i]["name"] for i in sample): weight
        for sample, weight in zip(profile["samples"], profile["weights"], strict=True)
    }
    assert stacks == stored


def test_formats_agree_under_a_selector(api: TestClient, stored: dict[str, int]) -> None:
    query = '{comm="other"}'
    expected = folded(api, query)
    assert expected == {"main;work;burn": 10_000_000, "main;a frame; with spaces": 50_000_000}
    data = api.get("/api/v1/export", params={"format": "pprof", "query": query}).content
    totals = pprof.folded_totals(pprof.decode(data, LIMIT), 0)
    assert {";".join(stack): value for stack, value in totals.items()} == expected


def test_unknown_format_is_400(api: TestClient) -> None:
    response = api.get("/api/v1/export", params={"format": "svg"})
    assert response.status_code == 400
    assert "folded, pprof, speedscope" in response.json()["error"]
