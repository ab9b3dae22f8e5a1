"""The embedded reference store: features with a lifetime, in a byte-bounded LRU, optionally on disk.

The LRU is the engine's own ``ReferenceCache`` (``cache_bytes``, exported as the
``insid3_reference_cache_*`` metrics). Without a directory, a reference evicted from it is gone; with one
(``INSID3_REFERENCE_DIR``), every reference is also written there and survives evictions and
restarts. Records follow ``core.serving.StoredReference`` (one lifetime rule for both serving modes)
and belong to their ``owner``: the methods taking a ``tenant`` see that tenant's references only
(``ANY_TENANT``: all). All methods are called from the event loop; disk I/O runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from core.cache import ReferenceCache
from core.serving import ReferenceNotFound, ReferencePage, StoredReference
from core.types import ReferenceFeatures

log = logging.getLogger("insid3.app")

DISK_DTYPE = "fp16"
REFERENCE_ID = re.compile(r"[0-9a-f]{32}")  # what core.cache.reference_key produces


class ReferenceStore:
    """Reference records and features keyed by content hash, live until ``expires_at``."""

    def __init__(self, cache: ReferenceCache, directory: Path | None) -> None:
        self._cache = cache
        self._directory = directory
        self._records: dict[str, StoredReference] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._load(directory)

    def _load(self, directory: Path) -> None:
        """Read the records on disk; unreadable ones and foreign ids are skipped (and logged)."""
        for path in directory.glob("*.json"):
            try:
                record = StoredReference.from_json(path.read_text())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignored unreadable reference record %s: %s", path.name, exc)
                continue
            if (not isinstance(record.reference_id, str) or not isinstance(record.owner, str)
                    or not REFERENCE_ID.fullmatch(record.reference_id) or path.stem != record.reference_id):
                log.warning("ignored reference record %s: it names another id", path.name)
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
        self._cache.discard(reference_id)
        if self._directory is not None:
            for path in self._paths(reference_id):
                path.unlink(missing_ok=True)

    def record(self, tenant: str, reference_id: str) -> StoredReference:
        """The record of a live reference ``tenant`` may see, else ``ReferenceNotFound``."""
        record = self._live(reference_id)
        if record is None or not record.visible_to(tenant):
            raise ReferenceNotFound(reference_id)
        return record

    def count(self, tenant: str) -> int:
        """How many live references ``tenant`` owns."""
        return sum(1 for reference_id in list(self._records)
                   if (record := self._live(reference_id)) and record.owner == tenant)

    def extend(self, reference_id: str, ttl_s: float, name: str | None) -> StoredReference | None:
        """Extend a live reference's lifetime to ``ttl_s`` from now (never shortened) and rename
        it to ``name`` when given; None when it is not stored."""
        record = self._live(reference_id)
        if record is None:
            return None
        extended = record.extended(ttl_s, name)
        if extended is not record:
            self._records[reference_id] = extended
            if self._directory is not None:
                self._paths(reference_id)[0].write_text(extended.to_json())
        return extended

    async def put(self, record: StoredReference, features: ReferenceFeatures) -> None:
        """Store a new reference."""
        self._cache.put(features)
        if self._directory is not None:
            record_path, features_path = self._paths(record.reference_id)
            payload = features.to_bytes(DISK_DTYPE)
            await asyncio.to_thread(features_path.write_bytes, payload)
            record_path.write_text(record.to_json())
        self._records[record.reference_id] = record

    async def features(self, tenant: str, reference_id: str) -> ReferenceFeatures:
        """The features of a live reference ``tenant`` may see (from memory, else from disk), else
        ``ReferenceNotFound``. A corrupt file on disk is dropped, so that uploading the same
        reference again repairs it."""
        self.record(tenant, reference_id)
        cached = self._cache.get(reference_id)
        if cached is not None:
            return cached
        if self._directory is None:
            raise ReferenceNotFound(reference_id)
        try:
            payload = await asyncio.to_thread(self._paths(reference_id)[1].read_bytes)
            features = ReferenceFeatures.from_bytes(payload)
        except Exception as exc:  # missing or corrupt: numpy/zip/json raise many kinds
            log.warning("dropped reference %s: its features on disk are unreadable (%s)", reference_id, exc)
            self._forget(reference_id)
            raise ReferenceNotFound(reference_id) from None
        self._cache.put(features)
        return features

    def delete(self, tenant: str, reference_id: str) -> None:
        """Forget a live reference ``tenant`` may see, else ``ReferenceNotFound``."""
        self.record(tenant, reference_id)
        self._forget(reference_id)

    def page(self, tenant: str, offset: int, limit: int) -> ReferencePage:
        """The live references ``tenant`` may see, newest first."""
        live = [record for reference_id in list(self._records)
                if (record := self._live(reference_id)) and record.visible_to(tenant)]
        live.sort(key=lambda record: record.created_at, reverse=True)
        return ReferencePage(items=live[offset:offset + limit], total=len(live), offset=offset, limit=limit)
