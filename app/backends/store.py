"""Embedded-mode reference storage: features in a byte-bounded LRU, optionally on disk.

Storage only (``core.references.ReferenceStorage``); the rules are ``core.references``. The LRU
is the engine's own ``ReferenceCache`` (``cache_bytes``, exported as the ``insid3_reference_cache_*``
metrics). Without a directory, a reference evicted from it is gone; with one
(``INSID3_REFERENCE_DIR``), every reference is also written there and survives evictions and
restarts; files are written atomically (``core.artifacts.write_atomic``). A record lives until its
``expires_at``. All methods are called from the event loop; disk I/O runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from core.artifacts import write_atomic
from core.cache import ReferenceCache
from core.references import UnreadableRecord
from core.serving import ReferencePage, StoredReference
from core.types import ReferenceFeatures

log = logging.getLogger("insid3.app")

DISK_DTYPE = "fp16"
REFERENCE_ID = re.compile(r"[0-9a-f]{32}")  # what core.cache.reference_key produces


class EmbeddedReferenceStorage:
    """Reference records and features keyed by content hash, in memory and optionally in ``directory``."""

    def __init__(self, cache: ReferenceCache, directory: Path | None) -> None:
        self._cache = cache
        self._directory = directory
        self._records: dict[str, StoredReference] = {}
        self._unreadable: dict[str, str] = {}  # reference id -> why its record file can't be read
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._load(directory)

    def _load(self, directory: Path) -> None:
        """Read the records on disk; foreign names are skipped, unreadable records kept aside (the
        policy drops them when they are asked for)."""
        for path in directory.glob("*.json"):
            if not REFERENCE_ID.fullmatch(path.stem):
                log.warning("ignored %s in the reference directory: not a reference id", path.name)
                continue
            try:
                record = StoredReference.from_json(path.read_text())
                if record.reference_id != path.stem or not isinstance(record.owner, str):
                    raise ValueError("it names another reference")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._unreadable[path.stem] = f"{path.name}: {exc}"
                continue
            self._records[record.reference_id] = record

    def _paths(self, reference_id: str) -> tuple[Path, Path]:
        assert self._directory is not None and REFERENCE_ID.fullmatch(reference_id)
        return self._directory / f"{reference_id}.json", self._directory / f"{reference_id}.npz"

    def _live(self, reference_id: str) -> StoredReference | None:
        record = self._records.get(reference_id)
        if record is None:
            return None
        evicted = self._directory is None and reference_id not in self._cache
        if record.expired() or evicted:
            self._forget(reference_id)
            return None
        return record

    def _forget(self, reference_id: str) -> None:
        self._records.pop(reference_id, None)
        self._unreadable.pop(reference_id, None)
        self._cache.discard(reference_id)
        if self._directory is not None and REFERENCE_ID.fullmatch(reference_id):
            for path in self._paths(reference_id):
                path.unlink(missing_ok=True)

    def _write_record(self, record: StoredReference) -> None:
        """In memory and on disk at once, with no await between: the file follows the order of the writes."""
        self._records[record.reference_id] = record
        if self._directory is not None:
            write_atomic(self._paths(record.reference_id)[0], record.to_json().encode())

    async def read(self, reference_id: str) -> StoredReference | None:
        if reference_id in self._unreadable:
            raise UnreadableRecord(self._unreadable[reference_id])
        return self._live(reference_id)

    async def save(self, record: StoredReference, features: ReferenceFeatures) -> StoredReference | None:
        existing = self._live(record.reference_id)
        if existing is not None:
            return existing
        self._cache.put(features)
        self._records[record.reference_id] = record  # before any await: a concurrent save finds it
        if self._directory is not None:
            payload = features.to_bytes(DISK_DTYPE)
            await asyncio.to_thread(write_atomic, self._paths(record.reference_id)[1], payload)
            current = self._records.get(record.reference_id)  # refreshed (or deleted) meanwhile?
            if current is None:
                self._forget(record.reference_id)
            else:
                self._write_record(current)
        return None

    async def replace(self, record: StoredReference, version: str) -> bool:
        current = self._live(record.reference_id)
        if current is None or current.version != version:
            return False
        self._write_record(record)
        return True

    async def delete(self, reference_id: str, version: str | None = None) -> bool:
        current = self._live(reference_id)
        if reference_id not in self._unreadable and (
                current is None or (version is not None and current.version != version)):
            return False
        self._forget(reference_id)
        return True

    async def count(self, owner: str) -> int:
        return sum(1 for reference_id in list(self._records)
                   if (record := self._live(reference_id)) and record.owner == owner)

    async def page(self, scope: str, offset: int, limit: int) -> ReferencePage:
        live = [record for reference_id in list(self._records)
                if (record := self._live(reference_id)) and record.visible_in(scope)]
        live.sort(key=lambda record: record.created_at, reverse=True)
        return ReferencePage(items=live[offset:offset + limit], total=len(live) + len(self._unreadable),
                             offset=offset, limit=limit, unreadable=tuple(self._unreadable))

    async def features(self, reference_id: str) -> ReferenceFeatures | None:
        """The features of a live reference (from memory, else from disk); None when there is
        none, ``UnreadableRecord`` when its file on disk cannot be read."""
        if self._live(reference_id) is None:
            return None
        cached = self._cache.get(reference_id)
        if cached is not None or self._directory is None:
            return cached
        try:
            payload = await asyncio.to_thread(self._paths(reference_id)[1].read_bytes)
            features = ReferenceFeatures.from_bytes(payload)
        except Exception as exc:  # missing or corrupt: numpy/zip/json raise many kinds
            raise UnreadableRecord(f"its features on disk are unreadable ({type(exc).__name__}: {exc})") from None
        self._cache.put(features)
        return features
