import gzip
import json

from fastapi.testclient import TestClient

from tests.server.conftest import MAX_INGEST_BYTES, Ingest, batch, folded

STACKS = [["main", "work", "burn"], ["main", "work"], ["main", "syscall_[k]"]]
LABELS = {"node": "n1", "namespace": "shop", "pod": "api-1", "comm": "api", "pid": "42"}


def test_ingest_then_export_folded(api: TestClient) -> None:
    body = batch(STACKS, [(LABELS, [(0, 30), (1, 5), (0, 10)]), ({"pid": "7"}, [(2, 4)])])
    response = api.post("/api/v1/ingest", json=body)
    assert response.status_code == 200
    assert response.json() == {"stored_samples": 4, "stacks": 3}
    export = api.get("/api/v1/export", params={"format": "folded"})
    assert export.text == "main;syscall_[k] 4\nmain;work 5\nmain;work;burn 40\n"


def test_retried_batch_is_stored_once(api: TestClient, ingest: Ingest) -> None:
    body = batch(STACKS, [(LABELS, [(0, 30)])], batch_id="retry-me-0001")
    ingest(body)
    ingest(body)
    ingest(body)
    assert folded(api) == {"main;work;burn": 30}


def test_same_content_with_new_batch_id_counts_again(api: TestClient, ingest: Ingest) -> None:
    ingest(batch(STACKS, [(LABELS, [(0, 30)])]))
    ingest(batch(STACKS, [(LABELS, [(0, 30)])]))
    assert folded(api) == {"main;work;burn": 60}


def test_gzip_body(api: TestClient) -> None:
    body = gzip.compress(json.dumps(batch(STACKS, [(LABELS, [(1, 9)])])).encode())
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    response = api.post("/api/v1/ingest", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert folded(api) == {"main;work": 9}


def test_oversize_body_is_413(api: TestClient) -> None:
    body = batch([["x" * 4000]] * (MAX_INGEST_BYTES // 4000 + 1), [])
    response = api.post("/api/v1/ingest", json=body)
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]


def test_gzip_bomb_is_413(api: TestClient) -> None:
    bomb = gzip.compress(b" " * (MAX_INGEST_BYTES * 4))
    assert len(bomb) < MAX_INGEST_BYTES
    response = api.post("/api/v1/ingest", content=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "error" in response.json()


def test_broken_gzip_is_400(api: TestClient) -> None:
    truncated = gzip.compress(b'{"a": 1}' * 100)[:20]
    for body in (b"not gzip at all", truncated):
        response = api.post("/api/v1/ingest", content=body, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 400
        assert "gzip" in response.json()["error"]


def test_unknown_content_encoding_is_415(api: TestClient) -> None:
    response = api.post("/api/v1/ingest", content=b"{}", headers={"Content-Encoding": "br"})
    assert response.status_code == 415
    assert "Content-Encoding" in response.json()["error"]


def test_malformed_json_is_400_json(api: TestClient) -> None:
    response = api.post("/api/v1/ingest", content=b'{"batch_id": ', headers={})
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed JSON")


def test_invalid_batch_names_the_field(api: TestClient) -> None:
    body = batch(STACKS, [(LABELS, [(0, 1)])])
    body["period"] = 0
    del body["batch_id"]
    response = api.post("/api/v1/ingest", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert "body.period" in error
    assert "body.batch_id" in error


def test_dangling_stack_reference_is_422(api: TestClient) -> None:
    body = batch(STACKS, [(LABELS, [(0, 1)])])
    body["series"][0]["samples"][0]["stack"] = 99
    response = api.post("/api/v1/ingest", json=body)
    assert response.status_code == 422
    assert "refers to stack 99" in response.json()["error"]


def test_unknown_profile_type_is_400(api: TestClient) -> None:
    body = batch(STACKS, [(LABELS, [(0, 1)])])
    body["profile_type"] = "heap"
    response = api.post("/api/v1/ingest", json=body)
    assert response.status_code == 400
    assert "heap" in response.json()["error"]


def test_bad_pid_is_400(api: TestClient) -> None:
    body = batch(STACKS, [({"pid": "12a"}, [(0, 1)])])
    response = api.post("/api/v1/ingest", json=body)
    assert response.status_code == 400
    assert "pid" in response.json()["error"]


def test_empty_batch_is_accepted(api: TestClient, ingest: Ingest) -> None:
    assert ingest(batch([], [])).json() == {"stored_samples": 0, "stacks": 0}
    assert folded(api) == {}


def test_sql_injection_in_labels_round_trips_as_data(api: TestClient, ingest: Ingest) -> None:
    evil = "x'); DROP TABLE samples; --\\ \" {p0:String}"
    ingest(batch(STACKS, [({"pod": evil, "team": evil}, [(0, 3)]), ({"pod": "ok"}, [(1, 4)])]))
    selector_value = evil.replace("\\", "\\\\").replace('"', '\\"')
    assert folded(api, f'{{pod="{selector_value}"}}') == {"main;work;burn": 3}
    assert folded(api, f'{{team="{selector_value}"}}') == {"main;work;burn": 3}
    assert folded(api) == {"main;work;burn": 3, "main;work": 4}


def test_frames_with_odd_characters_keep_their_identity(api: TestClient, ingest: Ingest) -> None:
    stacks = [["a\nb"], ["a", "b"], ["ünï", "c'o\"de"]]
    ingest(batch(stacks, [({}, [(0, 1), (1, 2), (2, 3)])]))
    response = api.get("/api/v1/export")
    # The folded format cannot hold a line break; it is escaped, not split.
    assert response.text.split("\n") == ["a;b 2", "a\\nb 1", "ünï;c'o\"de 3", ""]
