"""The three GETs the agent sends to the Kubernetes API, through the official client.

The client's Configuration and config loaders (kubeconfig, in-cluster service
account with token refresh), its ApiClient (authentication, TLS) and its
Watch are used as they are. The generated API classes are not: importing
CoreV1Api, AppsV1Api and BatchV1Api costs about 27 MB of memory (measured,
docs/kubernetes.md) for three endpoints, so requests are serialized with
ApiClient.param_serialize and sent with ApiClient.call_api, which is what
those classes do underneath. Responses stay JSON: no models are built.
"""

import json
import logging
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from podflame.symbolizer.text import display

log = logging.getLogger(__name__)

_AUTH = ["BearerToken"]
_ACCEPT = {"Accept": "application/json"}
Timeout = tuple[float, float]  # (connect, read) seconds


def api_client(kubeconfig: Path | None) -> client.ApiClient | None:
    """A client for --kubeconfig, else for the pod's service account; None outside a cluster."""
    configuration = client.Configuration()
    # The watch loop retries with backoff; urllib3's own retries would only
    # add delay and a log line per attempt.
    configuration.retries = False
    try:
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
    except ConfigException as error:
        if kubeconfig is not None:
            log.error("cannot use --kubeconfig %s: %s; pod metadata is off", kubeconfig, error)
        else:
            log.info(
                "not in a Kubernetes pod and no --kubeconfig: pod metadata is off, samples "
                "carry the cgroup's pod_uid and container_id (%s)",
                error,
            )
        return None
    return client.ApiClient(configuration)


class KubeApi:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def list_pods(self, **options: Any) -> Any:
        """GET /api/v1/pods with the options CoreV1Api.list_pod_for_all_namespaces takes.

        A list or, with watch=True, a watch: Watch.stream calls it so. Returns
        the raw HTTP response (Watch reads it line by line); having no model
        type in its signature or docstring, it makes Watch yield the events'
        JSON instead of building V1Pod models.
        """
        names = {
            "field_selector": "fieldSelector",
            "resource_version": "resourceVersion",
            "allow_watch_bookmarks": "allowWatchBookmarks",
            "timeout_seconds": "timeoutSeconds",
            "watch": "watch",
        }
        query = {names[k]: v for k, v in options.items() if k in names and v is not None}
        return self._get("/api/v1/pods", {}, query, options.get("_request_timeout"))

    def get_json(self, path: str, path_params: dict[str, str], timeout: Timeout) -> dict[str, Any]:
        """GET one object, e.g. /apis/apps/v1/namespaces/{namespace}/replicasets/{name}."""
        response = self._get(path, path_params, {}, timeout)
        try:
            body: dict[str, Any] = valid_text(json.loads(response.data))
        finally:
            response.release_conn()
        return body

    def _get(
        self,
        path: str,
        path_params: dict[str, str],
        query: dict[str, Any],
        timeout: Timeout | None,
    ) -> Any:
        method, url, headers, body, post = self.api.param_serialize(
            method="GET",
            resource_path=path,
            path_params=path_params,
            query_params=list(query.items()),
            header_params=dict(_ACCEPT),
            auth_settings=_AUTH,
        )
        response = self.api.call_api(method, url, headers, body, post, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response  # the urllib3 response, not read yet


def valid_text(value: Any) -> Any:
    """Decoded JSON with every string valid Unicode: a "\\udcff" escape decodes to a
    lone surrogate, which no label or wire format can carry (symbolizer.text)."""
    if isinstance(value, str):
        return display(value)
    if isinstance(value, dict):
        return {display(k): valid_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_text(v) for v in value]
    return value
