"""Who is at the other end of a connection: the seam for pod-by-IP lookups."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from podflame.agent.kubernetes import KubernetesMetadata


class PeerResolver(Protocol):
    """Labels of the pod (or other known endpoint) that owns an address.

    Best effort: never raises; an empty dict when the address is not known.
    The Kubernetes metadata provider implements it with its pod-by-IP index.
    """

    def peer(self, address: str) -> dict[str, str]: ...


class NoPeers:
    """No lookup: outside Kubernetes, or until a provider is wired in."""

    def peer(self, address: str) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class PodPeers:
    """Peers that are pods of this node, from the Kubernetes pod index."""

    kubernetes: "KubernetesMetadata"

    def peer(self, address: str) -> dict[str, str]:
        pod = self.kubernetes.pod_by_ip(address)
        if pod is None:
            return {}
        labels = {
            "namespace": pod.namespace,
            "pod": pod.pod,
            "workload_kind": pod.workload_kind,
            "workload": pod.workload,
        }
        return {name: value for name, value in labels.items() if value}
