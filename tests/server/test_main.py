import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from podflame.server.clickhouse_store import open_store
from podflame.server.main import build_server, redact, server_url
from podflame.server.settings import ServerSettings
from tests.conftest import free_port
from tests.server.conftest import batch


@pytest.fixture
def default_database(chdb_client: Client) -> Iterator[None]:
    """open_store uses the `podflame` database of the session's chDB path."""
    yield
    chdb_client.command("DROP DATABASE IF EXISTS podflame")


@pytest.mark.usefixtures("default_database")
@pytest.mark.parametrize("prefix", ["", "./"])
def test_open_store_resolves_a_relative_chdb_path(
    chdb_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    monkeypatch.chdir(chdb_path.parent)
    store = open_store(f"chdb://{prefix}{chdb_path.name}", retention_days=3)
    try:
        assert store.database == "podflame"
        store.ping()
    finally:
        store.close()


def test_open_store_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="unsupported storage"):
        open_store("sqlite:///tmp/x")


@pytest.mark.usefixtures("default_database")
def test_build_server_runs_in_a_thread_and_stops(chdb_path: Path) -> None:
    settings = ServerSettings(storage=f"chdb://{chdb_path}", port=free_port())
    server = build_server(settings)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = server_url(settings)
        assert httpx.get(url + "readyz").status_code == 200
        body = batch([["main", "run"]], [({"pod": "p"}, [(0, 5)])])
        assert httpx.post(url + "api/v1/ingest", json=body).status_code == 200
        assert httpx.get(url + "api/v1/export").text == "main;run 5\n"
    finally:
        server.should_exit = True
        thread.join(30)
    assert not thread.is_alive()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODFLAME_PORT", "9001")
    monkeypatch.setenv("PODFLAME_STORAGE", "http://u:p@ch:8123/prof")
    settings = ServerSettings()
    assert (settings.host, settings.port, settings.retention_days) == ("127.0.0.1", 9001, 7)
    assert settings.storage == "http://u:p@ch:8123/prof"
    assert settings.max_ingest_bytes == 64 * 1024 * 1024
    assert all(field.description for field in ServerSettings.model_fields.values())


def test_helpers() -> None:
    assert redact("https://user:secret@ch:8443/db") == "https://user:***@ch:8443/db"
    assert redact("chdb://./data") == "chdb://./data"
    assert server_url(ServerSettings(host="::1", port=1)) == "http://[::1]:1/"
