"""HTTPS: the real `podflame server` with --tls-cert/--tls-key, and the agent's shipper
verifying it against --ca-file, with a certificate authority made for the test."""

import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from podflame.agent.shipper import Shipper
from podflame.model import Batch
from podflame.server.main import build_server, server_url
from podflame.server.settings import ServerSettings
from tests.conftest import PODFLAME, running_server
from tests.server.conftest import batch
from tests.tlscerts import Certificates, make_certificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_server(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("https-server")
    flags = ["--tls-cert", str(certificates.cert), "--tls-key", str(certificates.key)]
    with running_server(directory, extra=flags, ca_file=certificates.ca) as url:
        yield url


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


def a_batch() -> Batch:
    labels = {"namespace": "tls", "pod": f"p-{uuid.uuid4().hex[:8]}"}
    return Batch.model_validate(batch([["main", "over_tls"]], [(labels, [(0, 7)])]))


def stored(url: str, ca: Path, pod: str) -> str:
    params = {"query": f'{{pod="{pod}"}}', "from": "now-1h"}
    response = httpx.get(url + "/api/v1/export", params=params, verify=trusting(ca), timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def test_server_speaks_https_only(https_server: str, certificates: Certificates) -> None:
    assert https_server.startswith("https://")
    response = httpx.get(https_server + "/readyz", verify=trusting(certificates.ca))
    assert response.json() == {"status": "ready"}
    plain = https_server.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(plain + "/readyz", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(https_server + "/readyz", verify=trusting(certificates.other_ca))


def test_agent_ships_over_https_with_its_ca_file(
    https_server: str, certificates: Certificates
) -> None:
    shipper = Shipper(https_server, max_pending=5, ca_file=certificates.ca)
    sent = a_batch()
    shipper.ship(sent)
    assert (shipper.stats.batches_sent, shipper.stats.send_failures) == (1, 0)
    pod = sent.series[0].labels["pod"]
    assert stored(https_server, certificates.ca, pod) == "main;over_tls 7\n"


@pytest.mark.parametrize("trust", ["other_ca", "system"])
def test_agent_refuses_a_server_it_cannot_verify(
    https_server: str, certificates: Certificates, trust: str
) -> None:
    """A CA that did not sign the certificate, or only the system's trust store: the batch
    stays queued, unsent."""
    ca_file = certificates.other_ca if trust == "other_ca" else None
    shipper = Shipper(https_server, max_pending=5, ca_file=ca_file)
    sent = a_batch()
    shipper.ship(sent)
    assert (shipper.stats.batches_sent, shipper.stats.send_failures) == (0, 1)
    assert len(shipper.pending) == 1
    assert stored(https_server, certificates.ca, sent.series[0].labels["pod"]) == ""


def test_a_certificate_for_another_name_is_refused(
    https_server: str, certificates: Certificates
) -> None:
    """The certificate names 127.0.0.1 and localhost: reached under another name, it is
    refused although its CA is trusted."""
    port = int(https_server.rsplit(":", 1)[1])
    context = trusting(certificates.ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="match"),
    ):
        context.wrap_socket(raw, server_hostname="other.example")
    # The right name, on a fresh connection, is fine.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        context.wrap_socket(raw, server_hostname="localhost").close()


def test_tls_settings_go_together_and_are_checked_at_start(
    tmp_path: Path, certificates: Certificates
) -> None:
    with pytest.raises(ValueError, match="together"):
        ServerSettings(tls_cert=certificates.cert)
    settings = ServerSettings(
        storage=f"chdb://{tmp_path / 'never-opened'}",
        tls_cert=certificates.cert,
        tls_key=certificates.ca,  # not the certificate's key
    )
    with pytest.raises(SystemExit, match="cannot use --tls-cert"):
        build_server(settings)
    assert not (tmp_path / "never-opened").exists()
    good = ServerSettings(port=8443, tls_cert=certificates.cert, tls_key=certificates.key)
    assert server_url(good) == "https://127.0.0.1:8443/"


def test_agent_with_a_missing_ca_file_does_not_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *PODFLAME,
            "agent",
            "--server",
            "https://127.0.0.1:1",
            "--metrics-port",
            "0",
            "--ca-file",
            str(tmp_path / "missing.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "ca_file" in result.stderr and "missing.pem" in result.stderr
