import pytest
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from podflame.model import Batch
from podflame.server import schema
from podflame.server.app import create_app
from podflame.server.clickhouse_store import ClickHouseStore
from podflame.server.schema import MIGRATIONS
from tests.server.conftest import Ingest, batch, folded


@pytest.fixture
def labelled(ingest: Ingest) -> None:
    api1 = {"namespace": "shop", "pod": "api-1", "comm": "api", "pid": "10", "team": "red"}
    api2 = {"namespace": "shop", "pod": "api-2", "comm": "api", "pid": "9", "zone": "b"}
    host = {"node": "n1", "comm": "sshd", "team": ""}
    ingest(batch([["a"]], [(api1, [(0, 1)]), (api2, [(0, 1)]), (host, [(0, 1)])]))


@pytest.mark.usefixtures("labelled")
@pytest.mark.parametrize(
    ("query", "names"),
    [
        # service_name is derived (schema.SERVICE_NAME_SQL, a column): every sample has one.
        ("", ["comm", "namespace", "node", "pid", "pod", "service_name", "team", "zone"]),
        ('{pod="api-1"}', ["comm", "namespace", "pid", "pod", "service_name", "team"]),
        # An empty value is no value: the host process has no team.
        ('{comm="sshd"}', ["comm", "node", "service_name"]),
        ('{comm="none"}', []),
    ],
)
def test_label_names(api: TestClient, query: str, names: list[str]) -> None:
    response = api.get("/api/v1/labels", params={"query": query})
    assert response.status_code == 200, response.text
    assert response.json() == {"names": names}


@pytest.mark.usefixtures("labelled")
@pytest.mark.parametrize(
    ("name", "query", "values"),
    [
        ("pod", "", ["api-1", "api-2"]),
        ("comm", "", ["api", "sshd"]),
        ("comm", '{namespace="shop"}', ["api"]),
        ("pid", "", ["9", "10"]),  # numerically
        ("team", "", ["red"]),
        ("zone", '{pod=~"api-.*"}', ["b"]),
        ("absent", "", []),
    ],
)
def test_label_values(api: TestClient, name: str, query: str, values: list[str]) -> None:
    response = api.get(f"/api/v1/labels/{name}/values", params={"query": query})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": name, "values": values, "truncated": False}


@pytest.mark.usefixtures("labelled")
def test_label_values_limit(api: TestClient) -> None:
    body = api.get("/api/v1/labels/pod/values", params={"limit": 1}).json()
    assert body == {"name": "pod", "values": ["api-1"], "truncated": True}


@pytest.mark.parametrize(
    ("path", "params", "status", "parameter"),
    [
        ("/api/v1/labels/1pod/values", {}, 400, "name"),
        ("/api/v1/labels/po-d/values", {}, 400, "name"),
        ("/api/v1/labels/pod/values", {"limit": "0"}, 422, None),
        ("/api/v1/labels/pod/values", {"query": "{"}, 400, "query"),
        ("/api/v1/labels", {"from": "later"}, 400, "from"),
        ("/api/v1/labels", {"query": '{pod=~"("}'}, 400, "query"),
    ],
)
def test_label_errors_are_json(
    api: TestClient, path: str, params: dict[str, str], status: int, parameter: str | None
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == status
    assert response.json()["error"]
    assert response.json().get("parameter") == parameter


# What an agent on Kubernetes sends: label columns and labels-map entries side by side.
KUBE_LABELS = {
    "node": "n1",
    "namespace": "shop",
    "pod": "api-7c9f5d-x2x4q",
    "container": "api",
    "workload_kind": "Deployment",
    "workload": "api",
    "comm": "api",
    "pid": "4242",
    "image": "shop/api:2.1",
    "image_id": "shop/api@sha256:" + "ab" * 32,
    "pod_uid": "8712f785-1a3e-41ec-a00b-e2dcc77431cb",
    "container_id": "73051af271105c07e1f493b34856a77e665e3b0b4fc72f76c807dfbffeb881bd",
    "app_kubernetes_io_name": "api",
    "app_kubernetes_io_version": "2.1",
}
V1_IMAGE = {**KUBE_LABELS, "image": "shop/api:2.0", "app_kubernetes_io_version": "2.0"}
HOST = {"node": "n1", "comm": "sshd", "pid": "77", "systemd_unit": "ssh.service"}


KUBE_SERIES = [(KUBE_LABELS, 30), (V1_IMAGE, 20), (HOST, 5)]


def expected_total(name: str, value: str, equal: bool = True) -> int:
    return sum(v for labels, v in KUBE_SERIES if (labels.get(name, "") == value) == equal)


@pytest.fixture
def kube_labelled(ingest: Ingest) -> None:
    series = [(labels, [(stack, value)]) for stack, (labels, value) in enumerate(KUBE_SERIES)]
    ingest(batch([["main", "serve"], ["main", "old"], ["sshd"]], series))


@pytest.mark.usefixtures("kube_labelled")
def test_every_kubernetes_label_is_listed(api: TestClient) -> None:
    names = api.get("/api/v1/labels").json()["names"]
    assert set(KUBE_LABELS) | {"systemd_unit", "service_name"} == set(names)


@pytest.mark.usefixtures("kube_labelled")
def test_service_name_is_namespace_workload_or_process(api: TestClient) -> None:
    """Derived when read (for Grafana's service picker), so older samples have it too."""
    body = api.get("/api/v1/labels/service_name/values").json()
    service = f"{KUBE_LABELS['namespace']}/{KUBE_LABELS['workload']}"
    assert body["values"] == sorted([service, "sshd"])
    top = api.get("/api/v1/top", params={"query": f'{{service_name="{service}"}}'}).json()
    assert top["total"] == 30 + 20


def test_samples_stored_before_the_service_name_column_have_one(
    chdb_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = "t_service_name_from_v5"
    chdb_client.command(f"DROP DATABASE IF EXISTS {database}")
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:5])  # before the column
    old = ClickHouseStore(chdb_client, database=database)
    series = [(labels, [(stack, value)]) for stack, (labels, value) in enumerate(KUBE_SERIES)]
    old.ingest(Batch.model_validate(batch([["main", "serve"], ["main", "old"], ["sshd"]], series)))
    monkeypatch.undo()
    api = TestClient(create_app(ClickHouseStore(chdb_client, database=database)))
    service = f"{KUBE_LABELS['namespace']}/{KUBE_LABELS['workload']}"
    values = api.get("/api/v1/labels/service_name/values").json()["values"]
    assert values == sorted([service, "sshd"])
    top = api.get("/api/v1/top", params={"query": f'{{service_name="{service}"}}'}).json()
    assert top["total"] == 30 + 20
    chdb_client.command(f"DROP DATABASE {database}")


@pytest.mark.usefixtures("kube_labelled")
@pytest.mark.parametrize("name", sorted(set(KUBE_LABELS) - {"pid"}))
def test_kubernetes_label_values_and_selectors(api: TestClient, name: str) -> None:
    """Columns (pod, workload, ...) and map labels (image, pod_uid, ...) answer alike."""
    expected = sorted({KUBE_LABELS[name], V1_IMAGE[name]})
    body = api.get(f"/api/v1/labels/{name}/values", params={"query": '{comm="api"}'}).json()
    assert body["values"] == expected
    value = KUBE_LABELS[name]
    selected = f'{{{name}="{value}"}}'
    others = f'{{{name}!="{value}"}}'
    top = api.get("/api/v1/top", params={"query": selected}).json()
    assert top["total"] == expected_total(name, value)
    others_total = api.get("/api/v1/top", params={"query": others}).json()["total"]
    assert others_total == expected_total(name, value, equal=False)
    regex = f'{{{name}=~"{value[:3]}.*"}}'
    assert api.get("/api/v1/flamegraph", params={"query": regex}).json()["total"] >= 30
    timeline = api.get("/api/v1/timeline", params={"query": selected}).json()
    assert sum(v for _, v in timeline["points"]) == top["total"]
    folded_stacks = folded(api, selected)
    assert folded_stacks.get("main;serve") == 30


@pytest.mark.usefixtures("kube_labelled")
def test_diff_of_two_images(api: TestClient) -> None:
    params = {"left": '{image="shop/api:2.0"}', "right": '{image="shop/api:2.1"}'}
    body = api.get("/api/v1/diff", params=params).json()
    assert (body["left_total"], body["right_total"]) == (20, 30)
