"""Who is at the other end of a connection: the seam for pod-by-IP lookups."""

from typing import Protocol


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
