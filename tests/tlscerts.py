"""A throwaway certificate authority for TLS tests, made with the openssl command."""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_NAMES = "subjectAltName=IP:127.0.0.1,DNS:localhost"


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA's certificate: what a client trusts
    cert: Path  # the server's certificate, signed by the CA, for 127.0.0.1 and localhost
    key: Path  # the server's private key
    other_ca: Path  # an unrelated CA: trusting it must not be enough


def make_certificates(directory: Path) -> Certificates:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed for the TLS tests (scripts/install.sh)")
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other-ca"):
        _openssl(
            directory,
            "req",
            "-x509",
            *_new_key(f"{name}.key"),
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-subj",
            f"/CN=podflame test {name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        )
    _openssl(
        directory, "req", *_new_key("server.key"), "-out", "server.csr", "-subj", "/CN=localhost"
    )
    (directory / "server.ext").write_text(
        f"{SERVER_NAMES}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature\n"
    )
    _openssl(
        directory,
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    )
    return Certificates(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "other-ca.pem",
    )


def _new_key(path: str) -> list[str]:
    # Elliptic-curve keys: made in milliseconds, unlike RSA.
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", path]


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
