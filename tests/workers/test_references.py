"""The Redis reference store: fp16 features with a TTL, deduplication, listing, deletion."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.serving import StoredReference, expiry
from tests.workers.helpers import run_with_redis
from workers.references import ReferenceStore

Scenario = Callable[[ReferenceStore], Awaitable[None]]


@pytest.fixture
def run_with_store(redis_url: str) -> Callable[[Scenario], None]:
    def run(scenario: Scenario) -> None:
        run_with_redis(redis_url, lambda client, keys: scenario(ReferenceStore(client, keys)))

    return run


def _info(reference_id: str, ttl_s: float, created: datetime | None = None) -> StoredReference:
    created = created or datetime.now(UTC)
    return StoredReference(reference_id, f"name-{reference_id}", 64, 48, 10, "dinov3_vits16-0123456789ab", 64,
                           created, expiry(created, ttl_s))


def test_save_is_first_writer_wins_with_ttl(run_with_store: Callable[[Scenario], None]) -> None:
    async def scenario(store: ReferenceStore) -> None:
        first = _info("r1", 3600)
        assert await store.save(first, b"features-1", 3600) is None
        existing = await store.save(replace(_info("r1", 60), name="other"), b"features-2", 60)
        assert existing == first
        assert await store.features(["r1", "nope"]) == {"r1": b"features-1"}
        assert await store.record("r1") == first
        ttl_ms = await store.client.pttl(store.keys.reference("r1"))
        assert 0 < ttl_ms <= 3_600_000

        forever = _info("r2", 0)
        assert forever.expires_at is None
        await store.save(forever, b"f", 0)
        assert await store.client.pttl(store.keys.reference("r2")) == -1

    run_with_store(scenario)


def test_extend_only_ever_lengthens_a_lifetime(run_with_store: Callable[[Scenario], None]) -> None:
    async def scenario(store: ReferenceStore) -> None:
        info = _info("r1", 10)
        await store.save(info, b"f", 10)
        extended = await store.extend("r1", 7200)
        assert extended is not None and extended.name == info.name and extended.created_at == info.created_at
        assert extended.expires_at is not None and extended.expires_at > info.expires_at + timedelta(hours=1)
        assert await store.record("r1") == extended
        assert await store.client.pttl(store.keys.reference("r1")) > 3_600_000
        assert await store.extend("r1", 0.001) == extended  # a shorter lifetime is ignored
        assert await store.client.pttl(store.keys.reference("r1")) > 3_600_000
        forever = await store.extend("r1", 0)
        assert forever is not None and forever.expires_at is None
        assert await store.client.pttl(store.keys.reference("r1")) == -1
        assert await store.extend("r1", 10) == forever  # forever stays forever
        assert await store.client.pttl(store.keys.reference("r1")) == -1
        assert await store.extend("missing", 10) is None

    run_with_store(scenario)


def test_pages_are_newest_first_and_skip_expired(run_with_store: Callable[[Scenario], None]) -> None:
    async def scenario(store: ReferenceStore) -> None:
        now = datetime.now(UTC)
        for index in range(3):
            await store.save(_info(f"r{index}", 3600, now + timedelta(seconds=index)), b"f", 3600)
        expired = _info("old", 1, now - timedelta(hours=1))  # its expiry time has passed
        await store.save(expired, b"f", 1)
        page = await store.page(0, 2)
        assert [i.reference_id for i in page.items] == ["r2", "r1"] and page.total == 3
        page = await store.page(2, 10)
        assert [i.reference_id for i in page.items] == ["r0"] and page.total == 3
        assert await store.delete("r1") and not await store.delete("r1")
        page = await store.page(0, 10)
        assert [i.reference_id for i in page.items] == ["r2", "r0"] and page.total == 2

    run_with_store(scenario)
