"""Content hashes of references, and a thread-safe LRU of reference features, bounded in bytes,
with hit/miss/eviction counters."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import InvalidInputError
from core.images import ImageInput
from core.requests import DEFAULT_TENANT
from core.types import ReferenceFeatures


def content_bytes(source: ImageInput | None) -> bytes:
    """The bytes that identify an image or mask input, for content hashing."""
    if source is None:
        return b""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes() if Path(source).is_file() else str(source).encode()
    if isinstance(source, Image.Image):
        return f"{source.mode}{source.size}".encode() + source.tobytes()
    if isinstance(source, np.ndarray):
        return f"{source.dtype}{source.shape}".encode() + np.ascontiguousarray(source).tobytes()
    raise InvalidInputError(f"unsupported image input type {type(source).__name__}")


def reference_key(image: bytes, mask: bytes | None, model_id: str, image_size: int,
                  owner: str = DEFAULT_TENANT) -> str:
    """Content hash of a reference: the same inputs under the same model for the same owner (the
    tenant storing it) give the same key; two owners get two keys (the default tenant's keys are
    those of a service without tenants)."""
    digest = hashlib.sha256()
    owned = [] if owner == DEFAULT_TENANT else [owner.encode()]
    for part in (image, mask or b"", model_id.encode(), str(image_size).encode(), *owned):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:32]


class ReferenceCache:
    """LRU of ``ReferenceFeatures`` keyed by content hash, evicting least recently used entries
    until the total size fits ``max_bytes``. An entry larger than the whole budget is not stored."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, ReferenceFeatures] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> ReferenceFeatures | None:
        """The entry (marked as recently used), counting a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, reference: ReferenceFeatures) -> None:
        """Insert or refresh ``reference``, evicting the least recently used entries as needed."""
        size = reference.nbytes
        with self._lock:
            old = self._entries.pop(reference.key, None)
            if old is not None:
                self.bytes -= old.nbytes
            if size > self.max_bytes:
                return
            while self._entries and self.bytes + size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.nbytes
                self.evictions += 1
            self._entries[reference.key] = reference
            self.bytes += size

    def discard(self, key: str) -> None:
        """Remove ``key`` if present (not counted as an eviction)."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
