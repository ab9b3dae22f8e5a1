"""Atomic file writes, and verified files in a cache folder (the exported and compiled encoders).

The engine's caches (encoders, positional basis, weights-hash memos) and the evaluation state are
written through ``make_atomic``: a unique temporary name, flushed, then renamed into place.

Every artifact (an ONNX export, a compiled OpenVINO model) is a file plus a JSON record holding
the key it was made for and the sha256 of its bytes. Files are written through a temporary name
and a rename, so readers never see a partial file, and every load re-hashes the bytes: a
corrupt, partial or stale entry is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def make_atomic(path: Path, make: Callable[[Path], None]) -> None:
    """Make ``path`` with ``make(scratch)`` on a unique temporary file, flushed to disk and renamed into
    place: readers (other processes sharing the folder too) see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        scratch = Path(handle.name)
    try:
        make(scratch)
        with scratch.open("rb") as made:
            os.fsync(made.fileno())
        scratch.replace(path)
    finally:
        scratch.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``make_atomic``)."""
    make_atomic(path, lambda scratch: scratch.write_bytes(data))


def writable(folder: Path | None) -> bool:
    """Whether ``folder`` exists (or can be made) and can be written to."""
    if folder is None:
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(path: Path, key: str) -> str | None:
    """The sha256 of ``path`` when its record names ``key`` and its bytes still hash to the recorded sha256."""
    recorded = _recorded_sha256(path, key)
    sha256 = file_sha256(path) if recorded else None
    return _checked(path, recorded, sha256)


def read_verified(path: Path, key: str) -> tuple[bytes, str] | None:
    """The bytes of ``path`` and their sha256, read once, when ``verified`` would accept it."""
    recorded = _recorded_sha256(path, key)
    data = path.read_bytes() if recorded else b""
    sha256 = hashlib.sha256(data).hexdigest() if recorded else None
    return (data, sha256) if _checked(path, recorded, sha256) else None


def _recorded_sha256(path: Path, key: str) -> str | None:
    meta = read_json(path.with_suffix(".json"))
    if meta and meta.get("key") == key and isinstance(meta.get("sha256"), str) and path.is_file():
        return meta["sha256"]
    return None


def _checked(path: Path, recorded: str | None, sha256: str | None) -> str | None:
    """``sha256`` if it is the recorded one; else None, with a warning when something was there."""
    if recorded is not None and sha256 == recorded:
        return sha256
    if path.exists() or path.with_suffix(".json").exists():
        log.warning("rebuilding %s: missing, corrupt or stale", path)
    return None


def store(path: Path, key: str, make: Callable[[Path], None], **record: object) -> str:
    """Make ``path`` with ``make(scratch)`` atomically and record ``key`` and its sha256 beside it."""
    hashed: list[str] = []

    def make_and_hash(scratch: Path) -> None:
        make(scratch)
        hashed.append(file_sha256(scratch))

    make_atomic(path, make_and_hash)
    sha256 = hashed[0]
    write_atomic(path.with_suffix(".json"), json.dumps({"key": key, "sha256": sha256, **record}).encode())
    return sha256
