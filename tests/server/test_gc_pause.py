import gc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from podflame.server.gc_pause import CollectorPause, pause_collector
from tests.server.conftest import batch


@pytest.fixture(autouse=True)
def collector_enabled() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_the_collector_resumes_when_the_last_holder_leaves() -> None:
    pause = CollectorPause()
    with pause():
        assert not gc.isenabled()
        with pause():
            assert pause.holders == 2
        assert not gc.isenabled()
    assert gc.isenabled()
    assert pause.holders == 0


def test_an_error_inside_still_resumes_the_collector() -> None:
    pause = CollectorPause()
    with pytest.raises(RuntimeError), pause():
        raise RuntimeError("store failed")
    assert gc.isenabled()


def test_a_long_pause_takes_no_new_holders() -> None:
    # Negative: the pause counts as too long from its first instant on.
    pause = CollectorPause(max_seconds=-1)
    with pause():
        with pause():
            assert pause.holders == 1
        assert not gc.isenabled()
    assert gc.isenabled()
    # Once the holders are gone, a new pause starts.
    with pause():
        assert not gc.isenabled()


def test_a_collector_disabled_elsewhere_stays_disabled() -> None:
    gc.disable()
    pause = CollectorPause()
    with pause():
        assert pause.holders == 0
    assert not gc.isenabled()


def test_ingest_leaves_the_collector_running(api: TestClient) -> None:
    body = batch([["main"]], [({"pod": "p"}, [(0, 1)])])
    assert api.post("/api/v1/ingest", json=body).status_code == 200
    broken = {**body, "period": 0}
    assert api.post("/api/v1/ingest", json=broken).status_code == 422
    assert gc.isenabled()
    assert pause_collector.holders == 0
