"""API keys, tenants and who may reach what.

Keys come from ``INSID3_API_KEYS`` (``KEY`` for the default tenant, ``TENANT:KEY``) and/or the key
file ``INSID3_API_KEYS_FILE`` (one ``TENANT KEY [admin]`` per line; a line whose first non-blank
character is ``#`` is a comment, and a ``#`` anywhere else is part of its field). Keys are visible
ASCII (what an ``X-API-Key`` header carries); anything else is refused, naming the entry or line.
Only their sha256 digests are kept. The file is re-read when it changes (inode, size or
modification time; checked at most once a second) and on SIGHUP; a file that is empty, holds no
key, lacks its final newline (half-written) or fails to parse keeps the previous keys (logged).

``AuthMiddleware`` resolves the caller from the request headers, before any of the body is read:
a protected path without a valid ``X-API-Key`` is answered 401 at once. The routes get the caller
(``Principal``) through ``TenantDep``. With no keys configured everyone is the default tenant,
which then sees every reference (``UNGUARDED``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Receive, Scope, Send

from app.middleware import send_json_error
from app.settings import Settings
from core.errors import ConfigurationError
from core.serving import ANY_TENANT, DEFAULT_TENANT

log = logging.getLogger("insid3.app")

TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
KEY_TEXT = re.compile(r"[\x21-\x7e]+")  # visible ASCII: no space, control or non-ASCII character
FILE_FORMAT = "'TENANT KEY [admin]'"
FIELD_SEPARATOR = re.compile(r"[ \t]+")
HEADER = b"x-api-key"
BASIC_AUTH_PREFIX = "/labelstudio"  # Label Studio sends an ML backend's credentials as HTTP basic auth
RELOAD_CHECK_S = 1.0
PRINCIPAL_SCOPE_KEY = "insid3.principal"
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
PUBLIC_PATHS = ("/", "/healthz", "/readyz")

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Needed when API keys are on.")


@dataclass(frozen=True)
class Principal:
    """Who makes a request: a tenant id, and whether the key is an admin's (sees every tenant)."""

    tenant: str
    admin: bool = False

    @property
    def scope(self) -> str:
        """The tenant whose references this caller sees (``ANY_TENANT`` for an admin)."""
        return ANY_TENANT if self.admin else self.tenant


# Keys off: one caller, the default tenant, that sees every reference (as before tenants existed,
# references stored then included).
UNGUARDED = Principal(DEFAULT_TENANT, admin=True)


def digest(key: bytes) -> bytes:
    """What is kept of a key."""
    return hashlib.sha256(key).digest()


def _entry(tenant: str, key: str, admin: bool, where: str) -> tuple[bytes, Principal]:
    """A key's digest and principal; the error names the entry, never the key."""
    if not TENANT_ID.fullmatch(tenant):
        raise ConfigurationError(f"{where}: tenant id {tenant!r} must match {TENANT_ID.pattern}")
    if not key:
        raise ConfigurationError(f"{where}: empty API key")
    if not KEY_TEXT.fullmatch(key):
        position = next(i for i, char in enumerate(key) if not KEY_TEXT.fullmatch(char))
        raise ConfigurationError(f"{where}: the key of tenant {tenant!r} has a space, control or non-ASCII character "
                                 f"(at position {position}), which an X-API-Key header can't carry")
    return digest(key.encode()), Principal(tenant, admin)


def parse_setting(keys: list[str]) -> list[tuple[bytes, Principal]]:
    """``INSID3_API_KEYS`` entries: ``KEY`` (default tenant) or ``TENANT:KEY``."""
    entries = []
    for number, item in enumerate(keys, 1):
        tenant, sep, key = item.partition(":")
        where = f"INSID3_API_KEYS entry {number}"
        entries.append(_entry(tenant, key, False, where) if sep else _entry(DEFAULT_TENANT, item, False, where))
    return entries


def parse_file(text: str, path: Path) -> list[tuple[bytes, Principal]]:
    """Lines ``TENANT KEY [admin]``; blank lines and comment lines (``#`` first) are skipped. A file
    without a key, or whose last line has no newline (half-written), is refused."""
    if not text.endswith("\n"):
        raise ConfigurationError(f"{path.name}: empty, or its last line has no newline (half-written?); "
                                 "write the whole file, then rename it into place")
    entries = []
    for number, line in enumerate(text.removesuffix("\n").split("\n"), 1):
        fields = FIELD_SEPARATOR.split(line.removesuffix("\r").strip(" \t"))  # any other character is the field's
        if fields == [""] or fields[0].startswith("#"):
            continue
        where = f"{path.name} line {number}"
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] != "admin"):
            comment = " (comments go on their own line, starting with '#')" if "#" in line else ""
            raise ConfigurationError(f"{where}: expected {FILE_FORMAT}{comment}")
        entries.append(_entry(fields[0], fields[1], len(fields) == 3, where))
    if not entries:
        raise ConfigurationError(f"{path.name}: no key; expected {FILE_FORMAT} lines")
    return entries


class KeyRing:
    """The digests of every valid key and the principal each stands for."""

    def __init__(self, keys: list[str], path: Path | None) -> None:
        self._fixed = parse_setting(keys)
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._checked = time.monotonic()
        self._from_file: list[tuple[bytes, Principal]] = []
        if path is not None:
            self._from_file = self._read(path)
        self.enabled = bool(self._fixed or path is not None)

    @classmethod
    def of(cls, settings: Settings) -> KeyRing:
        return cls(settings.api_keys, settings.api_keys_file)

    def _read(self, path: Path) -> list[tuple[bytes, Principal]]:
        """The file's entries. The stamp of what is read is taken before reading (a later write shows as a
        change), and also for a file refused (it is not read again until it changes)."""
        try:
            with path.open("rb") as handle:
                self._stamp = _stamp(os.fstat(handle.fileno()))
                text = handle.read().decode()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the API key file {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
        return parse_file(text, path)

    def reload(self) -> None:
        """Re-read the key file; when it can't be read or parsed, the previous keys stay (and it is logged)."""
        if self._path is None:
            return
        try:
            entries = self._read(self._path)
        except ConfigurationError as exc:
            log.error("kept the previous API keys: %s", exc.detail)
            return
        self._from_file = entries
        log.info("API keys reloaded from %s: %d keys", self._path, len(entries))

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if self._path is None or now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        try:
            stamp = _stamp(self._path.stat())
        except OSError:
            return
        if stamp != self._stamp:
            self.reload()

    def principal(self, key: bytes | None) -> Principal | None:
        """Who ``key`` (the raw header value) belongs to, or None. Every digest is compared."""
        if not self.enabled:
            return UNGUARDED
        if not key:
            return None
        self._reload_if_changed()
        presented = digest(key)
        found = None
        for known, principal in [*self._fixed, *self._from_file]:
            if hmac.compare_digest(presented, known):
                found = principal
        return found


def _stamp(status: os.stat_result) -> tuple[int, int, int]:
    """What changes when the key file is rewritten or replaced."""
    return status.st_ino, status.st_mtime_ns, status.st_size


def basic_password(value: bytes) -> bytes | None:
    """The password of an ``Authorization: Basic`` header value (None for anything else)."""
    scheme, _, encoded = value.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        _, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return password if sep else None


def presented_key(scope: Scope) -> bytes | None:
    """The API key of a request: its ``X-API-Key`` header, or under ``BASIC_AUTH_PREFIX`` also the
    password of its basic credentials (the user name is not checked)."""
    key = next((value for name, value in scope["headers"] if name == HEADER), None)
    if key is None and scope["path"].startswith(BASIC_AUTH_PREFIX + "/"):
        credentials = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        key = None if credentials is None else basic_password(credentials)
    return key


class AuthMiddleware:
    """401 (JSON) for a protected path without a valid key, from the headers alone; else the
    caller's ``Principal`` is put in the ASGI scope for ``TenantDep``."""

    def __init__(self, app: ASGIApp, keyring: KeyRing, settings: Settings) -> None:
        self.app = app
        self.keyring = keyring
        self.settings = settings

    def _public(self, path: str) -> bool:
        if path in PUBLIC_PATHS or path.startswith("/static/"):
            return True
        if path == "/metrics":
            return self.settings.metrics_auth == "public"
        return path in DOCS_PATHS and self.settings.docs == "public"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keyring.enabled:
            scope[PRINCIPAL_SCOPE_KEY] = UNGUARDED
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        principal = self.keyring.principal(presented_key(scope))
        if principal is not None:
            scope[PRINCIPAL_SCOPE_KEY] = principal
        if path == "/metrics" and self.settings.metrics_auth == "admin":
            if principal is None or not principal.admin:
                await _unauthorized(send, "an admin X-API-Key is required for /metrics (INSID3_METRICS_AUTH)")
                return
        elif principal is None and path.startswith(BASIC_AUTH_PREFIX + "/"):
            await send_json_error(send, 401, "unauthorized", "basic auth whose password is a valid API key is "
                                  "required", [(b"www-authenticate", b'Basic realm="insid3"')])
            return
        elif principal is None and not self._public(path):
            await _unauthorized(send, "a valid X-API-Key header is required")
            return
        await self.app(scope, receive, send)


async def _unauthorized(send: Send, detail: str) -> None:
    await send_json_error(send, 401, "unauthorized", detail, [(b"www-authenticate", b"X-API-Key")])


def current_principal(request: Request) -> Principal:
    """The caller, as resolved by ``AuthMiddleware`` (401 if it resolved none: never the default tenant)."""
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if not isinstance(principal, Principal):
        raise HTTPException(401, "a valid X-API-Key header is required", headers={"WWW-Authenticate": "X-API-Key"})
    return principal


TenantDep = Annotated[Principal, Depends(current_principal)]


def tenant_label(scope: Scope) -> str:
    """The metrics label of a request's tenant (``-`` when unauthenticated); never the key."""
    principal = scope.get(PRINCIPAL_SCOPE_KEY)
    return principal.tenant if isinstance(principal, Principal) else "-"
