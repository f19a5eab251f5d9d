"""Calls to podflame's querier.v1 API as Grafana makes them: Connect unary, binary
protobuf built from the project's generated messages (or JSON, as curl sends it)."""

import json
from typing import Any, TypeVar

import httpx
from google.protobuf import json_format
from google.protobuf.message import Message

from podflame.server import querier_pb2 as pb

SERVICE = "/querier.v1.QuerierService/"
ResponseT = TypeVar("ResponseT", bound=Message)


class ConnectFailure(AssertionError):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code}: {response.text}")
        self.status = response.status_code
        self.body: dict[str, Any] = response.json()


def call(
    client: httpx.Client | Any,
    method: str,
    request: Message,
    response_type: type[ResponseT],
    token: str | None = None,
) -> ResponseT:
    """POST `request` in binary protobuf as Grafana's backend does; ConnectFailure on error."""
    headers = {"Content-Type": "application/proto", "Connect-Protocol-Version": "1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = client.post(SERVICE + method, content=request.SerializeToString(), headers=headers)
    if response.status_code != 200:
        raise ConnectFailure(response)
    assert response.headers["content-type"] == "application/proto"
    return response_type.FromString(response.content)


def call_json(
    client: httpx.Client | Any, method: str, body: dict[str, Any], token: str | None = None
) -> httpx.Response:
    """POST a JSON body as `curl -H 'Content-Type: application/json' -d ...` does."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.post(SERVICE + method, content=json.dumps(body), headers=headers)  # type: ignore[no-any-return]


def parse_json(response: httpx.Response, response_type: type[ResponseT]) -> ResponseT:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return json_format.Parse(response.content, response_type())


def bars(graph: pb.FlameGraph) -> list[tuple[int, int, int, int, str]]:
    """(depth, x, total, self, name) per bar, decoding Pyroscope's relative offsets."""
    found = []
    for depth, level in enumerate(graph.levels):
        end = 0
        values = list(level.values)
        for i in range(0, len(values), 4):
            offset, total, own, name = values[i : i + 4]
            x = end + offset
            found.append((depth, x, total, own, graph.names[name]))
            end = x + total
    return found


def function_totals(graph: pb.FlameGraph) -> dict[str, int]:
    """Per name, the value of the stacks it is on, each counted once (as /api/v1/top's
    total): a bar nested in a bar of the same name is not added again."""
    found = bars(graph)
    totals: dict[str, int] = {}
    for depth, x, total, _, name in found:
        nested = any(d < depth and n == name and dx <= x < dx + t for d, dx, t, _, n in found)
        if not nested:
            totals[name] = totals.get(name, 0) + total
    return totals


def selector_request(
    profile_type: str, selector: str, start_ms: int, end_ms: int, **fields: Any
) -> pb.SelectMergeStacktracesRequest:
    return pb.SelectMergeStacktracesRequest(
        profile_typeID=profile_type, label_selector=selector, start=start_ms, end=end_ms, **fields
    )
