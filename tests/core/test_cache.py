"""The reference LRU is bounded in bytes and counts hits, misses and evictions."""

from __future__ import annotations

import torch

from core.cache import ReferenceCache, reference_key
from core.types import ReferenceFeatures


def _reference(key: str, channels: int = 8) -> ReferenceFeatures:
    features = torch.zeros(channels, 4, 4)
    return ReferenceFeatures(key, "m", 64, (64, 64), features, features.clone(), torch.ones(4, 4, dtype=torch.bool))


def test_lru_evicts_the_least_recently_used_to_fit_the_byte_budget() -> None:
    size = _reference("x").nbytes
    cache = ReferenceCache(max_bytes=2 * size)
    cache.put(_reference("a"))
    cache.put(_reference("b"))
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put(_reference("c"))
    assert "b" not in cache and "a" in cache and "c" in cache
    assert (cache.hits, cache.misses, cache.evictions, cache.bytes) == (1, 0, 1, 2 * size)
    assert cache.get("b") is None and cache.misses == 1


def test_entries_larger_than_the_budget_are_not_stored_and_replacing_keeps_the_count() -> None:
    cache = ReferenceCache(max_bytes=_reference("x").nbytes)
    cache.put(_reference("huge", channels=64))
    assert len(cache) == 0 and cache.bytes == 0
    cache.put(_reference("a"))
    cache.put(_reference("a"))
    assert len(cache) == 1 and cache.bytes == _reference("a").nbytes and cache.evictions == 0


def test_keys_depend_on_every_part_of_the_content() -> None:
    base = reference_key(b"img", b"mask", "model", 1024)
    assert base == reference_key(b"img", b"mask", "model", 1024)
    assert len({base, reference_key(b"img", b"mask2", "model", 1024), reference_key(b"img", None, "model", 1024),
                reference_key(b"img", b"mask", "other", 1024), reference_key(b"img", b"mask", "model", 512),
                reference_key(b"im", b"gmask", "model", 1024)}) == 6
