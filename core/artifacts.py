"""Atomic file writes, and verified files in a cache folder (exported encoders, the positional basis).

The engine's caches (encoders, positional basis, weights-hash memos) and the evaluation state are
written through ``make_atomic``: a unique temporary name, flushed, then renamed into place.

A verified file (``store`` / ``read_verified``) is a file plus a JSON record of what it was made
from (weights, image size, components, versions...), the sha256 of its bytes, and an HMAC of both
under the folder's private key (``.artifacts-key``, made once, readable by this user only): a
record written by anyone else does not verify. A load reads the bytes once, hashes those bytes
and hands the same bytes to the loader, so a file swapped after the check is never used. A
missing, corrupt, stale or forged entry is logged and rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

KEY_FILE = ".artifacts-key"  # per cache folder: signs the records of its verified files
KEY_BYTES = 32
_PROCESS_KEY = secrets.token_bytes(KEY_BYTES)  # when the folder's key can't be trusted: valid in this process only
_folder_keys: dict[Path, bytes] = {}
_folder_keys_lock = threading.Lock()


def make_atomic(path: Path, make: Callable[[Path], None]) -> None:
    """Make ``path`` with ``make(scratch)`` on a unique temporary file, flushed to disk and renamed into
    place: readers (other processes sharing the folder too) see the old file or the whole new one.
    The file gets the permissions of any file this process writes (0644 under the usual umask 022)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = _new_scratch(path.parent)
    try:
        make(scratch)
        with scratch.open("rb") as made:
            os.fsync(made.fileno())
        scratch.replace(path)
    finally:
        scratch.unlink(missing_ok=True)


def _new_scratch(folder: Path) -> Path:
    """A new empty file with a unique name in ``folder``, made with mode 0666 less the umask
    (``tempfile`` would make it 0600, unreadable to another user, say a Triton container's)."""
    while True:
        scratch = folder / f"tmp{secrets.token_hex(8)}.tmp"
        try:
            os.close(os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return scratch
        except FileExistsError:
            continue


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




def artifact_key(made_from: Mapping[str, object]) -> str:
    """A file name stem for what an artifact is made from (24 hex characters)."""
    return hashlib.sha256(_canonical(made_from)).hexdigest()[:24]


def read_verified(path: Path, made_from: Mapping[str, object]) -> tuple[bytes, str] | None:
    """The bytes of ``path`` and their sha256, read once, when its record is signed by this folder's key,
    names ``made_from``, and holds the sha256 of those bytes; else None (logged when something was there)."""
    record_path = path.with_suffix(".json")
    record = read_json(record_path)
    if record is None:
        return _rejected(path, "no readable record") if path.exists() or record_path.exists() else None
    expected_mac = _mac(path, record.get("made_from"), record.get("sha256"))
    if not hmac.compare_digest(str(record.get("mac")).encode(), expected_mac.encode()):
        return _rejected(path, "its record is not signed by this cache's key (forged, or written elsewhere)")
    if record.get("made_from") != json.loads(_canonical(made_from)):
        return _rejected(path, f"made from {record.get('made_from')}, not {dict(made_from)}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _rejected(path, f"unreadable ({exc.strerror})")
    sha256 = hashlib.sha256(data).hexdigest()
    return (data, sha256) if sha256 == record.get("sha256") else _rejected(path, "its bytes changed since written")


def _rejected(path: Path, why: str) -> None:
    log.warning("rebuilding %s: %s", path, why)
    return None


def store(path: Path, made_from: Mapping[str, object], make: Callable[[Path], None]) -> tuple[bytes, str]:
    """Make the file with ``make(scratch)`` in a private folder, then write those bytes to ``path``
    atomically with a signed record of ``made_from`` and their sha256; returns the bytes and the sha256."""
    with tempfile.TemporaryDirectory(prefix="insid3-artifact-") as private:  # mode 0700: nobody swaps it
        scratch = Path(private) / path.name
        make(scratch)
        data = scratch.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    write_atomic(path, data)
    record = {"made_from": json.loads(_canonical(made_from)), "sha256": sha256}
    record["mac"] = _mac(path, record["made_from"], sha256)
    write_atomic(path.with_suffix(".json"), json.dumps(record, indent=1).encode())
    return data, sha256


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _mac(path: Path, made_from: object, sha256: object) -> str:
    message = _canonical({"file": path.name, "made_from": made_from, "sha256": sha256})
    return hmac.new(folder_key(path.parent), message, hashlib.sha256).hexdigest()


def folder_key(folder: Path) -> bytes:
    """The folder's signing key: read from (or made once in) ``KEY_FILE``; a key file that others could
    read or write is not used (a key for this process only instead, logged: the cache then lasts one run)."""
    folder = folder.resolve()
    with _folder_keys_lock:
        if folder not in _folder_keys:
            _folder_keys[folder] = _read_or_make_key(folder / KEY_FILE)
        return _folder_keys[folder]


def _read_or_make_key(path: Path) -> bytes:
    try:
        if not path.exists():
            _publish_key(path)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            status, key = os.fstat(handle.fileno()), handle.read(KEY_BYTES + 1)
    except OSError as exc:
        log.warning("no signing key for the cache in %s (%s): its files are rebuilt each run", path.parent, exc)
        return _PROCESS_KEY
    others_can_use = status.st_mode & 0o007 or (status.st_mode & 0o070 and status.st_gid not in _own_groups())
    if status.st_uid != os.geteuid() or others_can_use or len(key) != KEY_BYTES:
        log.warning("%s is not a private %d-byte key of this user (chmod 600 it, or delete it to make a new "
                    "one): the cache in %s is rebuilt each run", path, KEY_BYTES, path.parent)
        return _PROCESS_KEY
    return key


def _own_groups() -> set[int]:
    return {os.getegid(), *os.getgroups()}


def _publish_key(path: Path) -> None:
    """Write a new random key to ``path`` unless another process made one first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # never replace a key another process published
            os.link(scratch, path)
    finally:
        os.unlink(scratch)
