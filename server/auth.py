"""Optional bearer tokens: who may ingest, who may query, and which namespaces they may read.

Tokens come from a JSON file (`--tokens-file`):

    [
      {"token": "s3cret-agent", "scopes": ["ingest"]},
      {"token": "s3cret-shop", "scopes": ["query"], "namespaces": ["shop"]},
      {"token": "s3cret-admin", "scopes": ["ingest", "query"]}
    ]

Without a file everything is open. With one, an ASGI middleware checks the
`Authorization: Bearer` header of the protected paths (the API and the Pyroscope
ingest paths; not the probes, /metrics, the docs or the UI files) and leaves
the matching token in the request state; the query dependencies read its
namespaces from there (deps.NamespaceScope).
"""

import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from podflame.server.errors import error_response

Permission = Literal["ingest", "query"]

# Paths that store data; every other protected path reads it.
INGEST_PATHS = frozenset({"/api/v1/ingest", "/ingest", "/push.v1.PusherService/Push"})
# Besides INGEST_PATHS: the API, any Connect-RPC service (Pyroscope's) and the
# Profiles Drilldown app's /pyroscope/render*.
_PROTECTED_PREFIXES = ("/api/", "/querier.v1.", "/push.v1.", "/pyroscope/")
PRINCIPAL_STATE_KEY = "principal"
# A namespace label value a token may be limited to: not empty, no spaces or control
# characters. Kubernetes' own names are stricter (RFC 1123), but Pyroscope SDKs push
# `namespace` labels of their own. "" or " shop" would match nothing, silently.
_NAMESPACE_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,253}")


class TokenEntry(BaseModel):
    """One entry of the tokens file."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=16, description="The secret; at least 16 characters.")
    scopes: list[Permission] = Field(min_length=1)
    namespaces: list[str] | None = Field(
        default=None, min_length=1, description="Namespaces this token may read; None: all."
    )
    name: str = Field(default="", description="For logs only.")

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, namespaces: list[str] | None) -> list[str] | None:
        for namespace in namespaces or ():
            if not _NAMESPACE_NAME.fullmatch(namespace):
                raise ValueError(
                    f"{namespace!r} is not a namespace name (1 to 253 characters, no"
                    " spaces or control characters)"
                )
        return namespaces


@dataclass(frozen=True)
class Principal:
    """The caller a token identifies."""

    name: str
    scopes: frozenset[str]
    # None: every namespace.
    namespaces: tuple[str, ...] | None


class TokensFileError(ValueError):
    pass


def load_tokens(path: Path) -> list[TokenEntry]:
    try:
        text = path.read_bytes()
    except OSError as error:
        raise TokensFileError(f"cannot read tokens file {path}: {error}") from None
    try:
        entries = TypeAdapter(list[TokenEntry]).validate_json(text)
    except ValidationError as error:
        raise TokensFileError(f"invalid tokens file {path}: {_describe(error, text)}") from None
    if len({entry.token for entry in entries}) != len(entries):
        raise TokensFileError(f"invalid tokens file {path}: a token appears twice")
    return entries


def _describe(error: ValidationError, text: bytes) -> str:
    """Each problem with the entry it is in: `entry 2 ("shop"): namespaces.0: ...`."""
    try:
        document = json.loads(text)
    except ValueError:
        return str(error)
    problems = []
    for item in error.errors(include_url=False):
        index, *where = item["loc"] or ("",)
        if not isinstance(index, int):
            problems.append(item["msg"])
            continue
        entry = document[index] if isinstance(document, list) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"entry {index + 1}" + (f" ({name!r})" if isinstance(name, str) and name else "")
        field = ".".join(str(part) for part in where)
        problems.append(f"{label}: {field}: {item['msg']}" if field else f"{label}: {item['msg']}")
    return "; ".join(problems)


class Authenticator:
    def __init__(self, entries: Sequence[TokenEntry]) -> None:
        # Comparing fixed-size digests keeps the comparison's time independent
        # of where (or whether) the tokens differ, and of their lengths.
        self._tokens = [
            (_digest(entry.token), _principal(entry, index)) for index, entry in enumerate(entries)
        ]

    def authenticate(self, presented: str) -> Principal | None:
        digest = _digest(presented)
        found = None
        # No early exit: every token is compared, whichever matches.
        for known, principal in self._tokens:
            if hmac.compare_digest(digest, known):
                found = principal
        return found


def required_permission(path: str) -> Permission | None:
    """The scope a path needs, or None for the open ones."""
    if path in INGEST_PATHS:
        return "ingest"
    if path.startswith(_PROTECTED_PREFIXES):
        return "query"
    return None


class BearerAuthMiddleware:
    """401 without a known token, 403 when the token lacks the path's scope."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        permission = required_permission(scope["path"]) if scope["type"] == "http" else None
        if permission is None:
            await self.app(scope, receive, send)
            return
        principal = self.authenticator.authenticate(_bearer(scope))
        if principal is None:
            challenge = {"WWW-Authenticate": 'Bearer realm="podflame"'}
            message = "missing or unknown bearer token (Authorization: Bearer <token>)"
            await error_response(401, message, challenge)(scope, receive, send)
            return
        if permission not in principal.scopes:
            message = f"this token lacks the {permission!r} scope"
            await error_response(403, message)(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _principal(entry: TokenEntry, index: int) -> Principal:
    namespaces = tuple(entry.namespaces) if entry.namespaces is not None else None
    return Principal(entry.name or f"token #{index + 1}", frozenset(entry.scopes), namespaces)
