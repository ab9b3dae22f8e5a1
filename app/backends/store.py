"""The embedded reference store: features with a TTL, in a byte-bounded LRU, optionally on disk.

The LRU is the engine's own ``ReferenceCache`` (``cache_bytes``, exported as the
``insid3_reference_cache_*`` metrics). Without a directory, a reference evicted from it is gone; with one
(``INSID3_REFERENCE_DIR``), every reference is also written there and survives evictions and
restarts. All methods are called from the event loop; disk I/O runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.backend import ReferenceInfo, ReferenceNotFound, ReferencePage
from core.cache import ReferenceCache
from core.types import ReferenceFeatures

DISK_DTYPE = "fp16"


def _now() -> datetime:
    return datetime.now(UTC)


class ReferenceStore:
    """Reference infos and features keyed by content hash, expiring at ``info.expires_at``."""

    def __init__(self, cache: ReferenceCache, directory: Path | None) -> None:
        self._cache = cache
        self._directory = directory
        self._infos: dict[str, ReferenceInfo] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for path in directory.glob("*.json"):
                with contextlib.suppress(ValueError):
                    info = ReferenceInfo.model_validate_json(path.read_text())
                    self._infos[info.reference_id] = info

    def _paths(self, reference_id: str) -> tuple[Path, Path]:
        assert self._directory is not None
        return self._directory / f"{reference_id}.json", self._directory / f"{reference_id}.npz"

    def _live_info(self, reference_id: str) -> ReferenceInfo | None:
        info = self._infos.get(reference_id)
        if info is None:
            return None
        expired = info.expires_at is not None and info.expires_at <= _now()
        evicted = self._directory is None and reference_id not in self._cache
        if expired or evicted:
            self._forget(reference_id)
            return None
        return info

    def _forget(self, reference_id: str) -> None:
        self._infos.pop(reference_id, None)
        self._cache.discard(reference_id)
        if self._directory is not None:
            for path in self._paths(reference_id):
                path.unlink(missing_ok=True)

    @staticmethod
    def expiry(ttl_s: float) -> datetime | None:
        """When a reference created now with ``ttl_s`` expires (None for ``ttl_s == 0``)."""
        return None if ttl_s == 0 else _now() + timedelta(seconds=ttl_s)

    def info(self, reference_id: str) -> ReferenceInfo:
        """The info of a live reference, else ``ReferenceNotFound``."""
        info = self._live_info(reference_id)
        if info is None:
            raise ReferenceNotFound(reference_id)
        return info

    def refresh(self, reference_id: str, ttl_s: float) -> ReferenceInfo | None:
        """Extend a live reference's expiry to ``ttl_s`` from now; None when it is not stored."""
        info = self._live_info(reference_id)
        if info is None:
            return None
        info = info.model_copy(update={"expires_at": self.expiry(ttl_s)})
        self._infos[reference_id] = info
        if self._directory is not None:
            self._paths(reference_id)[0].write_text(info.model_dump_json())
        return info

    async def put(self, info: ReferenceInfo, features: ReferenceFeatures) -> None:
        """Store a new reference."""
        self._cache.put(features)
        if self._directory is not None:
            info_path, features_path = self._paths(info.reference_id)
            payload = features.to_bytes(DISK_DTYPE)
            await asyncio.to_thread(features_path.write_bytes, payload)
            info_path.write_text(info.model_dump_json())
        self._infos[info.reference_id] = info

    async def features(self, reference_id: str) -> ReferenceFeatures:
        """The features of a live reference (from memory, else from disk), else ``ReferenceNotFound``."""
        self.info(reference_id)
        cached = self._cache.get(reference_id)
        if cached is not None:
            return cached
        if self._directory is None:
            raise ReferenceNotFound(reference_id)
        try:
            payload = await asyncio.to_thread(self._paths(reference_id)[1].read_bytes)
        except FileNotFoundError:
            self._forget(reference_id)
            raise ReferenceNotFound(reference_id) from None
        features = ReferenceFeatures.from_bytes(payload)
        self._cache.put(features)
        return features

    def delete(self, reference_id: str) -> None:
        """Forget a live reference, else ``ReferenceNotFound``."""
        self.info(reference_id)
        self._forget(reference_id)

    def page(self, offset: int, limit: int) -> ReferencePage:
        """Live references, newest first."""
        live = [info for reference_id in list(self._infos) if (info := self._live_info(reference_id))]
        live.sort(key=lambda info: info.created_at, reverse=True)
        return ReferencePage(items=live[offset:offset + limit], total=len(live), offset=offset, limit=limit)
