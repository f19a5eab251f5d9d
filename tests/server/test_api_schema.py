from fastapi.testclient import TestClient

ENDPOINTS = {
    "/api/v1/flamegraph": ({"query", "from", "until", "type", "max_nodes"}, "FlameGraphResponse"),
    "/api/v1/diff": (
        {"left", "left_from", "left_until", "right", "right_from", "right_until", "type"},
        "DiffResponse",
    ),
    "/api/v1/timeline": ({"query", "from", "until", "type", "step"}, "TimelineResponse"),
    "/api/v1/labels": ({"query", "from", "until", "type"}, "LabelNamesResponse"),
    "/api/v1/labels/{name}/values": ({"name", "query", "limit"}, "LabelValuesResponse"),
    "/api/v1/network/latency": (
        {"query", "from", "until", "group_by", "step", "limit"},
        "LatencyResponse",
    ),
    "/api/v1/network/peers": ({"query", "from", "until", "limit"}, "PeersResponse"),
}


def test_query_endpoints_are_documented(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    for path, (parameters, model) in ENDPOINTS.items():
        operation = schema["paths"][path]["get"]
        assert parameters <= {p["name"] for p in operation["parameters"]}, path
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model}"}
        assert "400" in operation["responses"]
    nodes = schema["components"]["schemas"]["FlameGraphResponse"]["properties"]["nodes"]
    assert "pre-order" in nodes["description"]


def test_network_responses_carry_the_contract_examples(api: TestClient) -> None:
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    (latency,) = schemas["LatencyResponse"]["examples"]
    assert latency["groups"][0]["labels"] == {"pod": "web-1", "syscall": "recvfrom"}
    (peers,) = schemas["PeersResponse"]["examples"]
    assert peers["peers"][0]["errors"] == {"ECONNREFUSED": 2}
