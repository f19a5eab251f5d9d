"""GET /metrics: the Prometheus text format, with the counters the issue asks for."""

import gzip
import json
import re

from fastapi.testclient import TestClient

from tests.server.conftest import batch

# One exposition line: a comment, or name{labels} value.
_LINE = re.compile(
    r"# (HELP|TYPE) [a-z_:][a-z0-9_:]* .+"
    r'|[a-z_:][a-z0-9_:]*(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? [0-9.e+-]+|'
    r"[a-z_:][a-z0-9_:]*(\{.*\})? \+Inf"
)


def parse(text: str) -> dict[str, float]:
    assert text.endswith("\n")
    samples = {}
    for line in text.splitlines():
        assert _LINE.fullmatch(line), line
        if not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def test_metrics_count_requests_ingest_and_memory(api: TestClient) -> None:
    body = gzip.compress(json.dumps(batch([["a", "b"]], [({"pod": "p"}, [(0, 3)])])).encode())
    headers = {"Content-Encoding": "gzip"}
    assert api.post("/api/v1/ingest", content=body, headers=headers).status_code == 200
    for _ in range(3):
        assert api.get("/api/v1/export", params={"query": '{pod="p"}'}).status_code == 200
    assert api.get("/api/v1/top", params={"query": "{"}).status_code == 400
    api.get("/no/such/page")

    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(response.text)
    route = 'method="GET",route="/api/v1/export"'
    assert samples[f'podflame_http_requests_total{{{route},status="200"}}'] == 3
    assert samples['podflame_http_requests_total{method="GET",route="/api/v1/top",status="400"}']
    assert samples['podflame_http_requests_total{method="GET",route="other",status="404"}'] == 1
    # Labels in name order, as prometheus_client writes them.
    assert samples[f'podflame_http_request_duration_seconds_bucket{{le="+Inf",{route}}}'] == 3
    assert samples[f"podflame_http_request_duration_seconds_count{{{route}}}"] == 3
    assert samples[f"podflame_http_request_duration_seconds_sum{{{route}}}"] > 0
    assert samples["podflame_ingested_batches_total"] == 1
    assert samples["podflame_ingested_samples_total"] == 1
    assert samples["podflame_ingest_received_bytes_total"] == len(body)
    assert samples['podflame_storage_errors_total{kind="unavailable"}'] == 0
    assert samples["process_resident_memory_bytes"] > 10 * 2**20
    # The raw path never becomes a label: one series per route, whatever the query.
    assert "pod=" not in response.text


def test_histogram_buckets_are_cumulative(api: TestClient) -> None:
    for _ in range(5):
        api.get("/healthz")
    samples = parse(api.get("/metrics").text)
    prefix = "podflame_http_request_duration_seconds_bucket{"
    route = 'method="GET",route="/healthz"}'
    buckets = [v for series, v in samples.items() if series.startswith(prefix) and route in series]
    assert buckets == sorted(buckets)
    assert buckets[-1] == 5
