"""References in a real Redis under the reference policy: first writer wins, lifetimes only grow,
listing, compare-and-delete, corrupt records dropped."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.references import ReferencePolicy
from core.serving import ANY_TENANT, CorruptReference, ReferenceNotFound, StoredReference, expiry, new_version
from tests.workers.helpers import run_with_redis
from workers.references import RedisReferenceStorage

Scenario = Callable[[ReferencePolicy[bytes]], Awaitable[None]]


@pytest.fixture
def run_with_policy(redis_url: str) -> Callable[[Scenario], None]:
    def run(scenario: Scenario) -> None:
        run_with_redis(redis_url, lambda client, keys: scenario(ReferencePolicy(RedisReferenceStorage(client, keys))))

    return run


def _info(reference_id: str, ttl_s: float, created: datetime | None = None, owner: str = "default") -> StoredReference:
    created = created or datetime.now(UTC)
    return StoredReference(reference_id, f"name-{reference_id}", 64, 48, 10, "dinov3_vits16-0123456789ab", 64,
                           created, expiry(created, ttl_s), owner, new_version())


def _storage(policy: ReferencePolicy[bytes]) -> RedisReferenceStorage:
    assert isinstance(policy.storage, RedisReferenceStorage)
    return policy.storage


def test_the_first_writer_wins_and_the_second_refreshes(run_with_policy: Callable[[Scenario], None]) -> None:
    async def scenario(policy: ReferencePolicy[bytes]) -> None:
        storage = _storage(policy)
        first = _info("r1", 3600)
        assert await policy.keep(first, b"features-1", 3600) == (first, True)
        record, created = await policy.keep(replace(_info("r1", 60), name="other"), b"features-2", 60)
        assert not created and record.name == "other" and record.version != first.version
        assert record.expires_at == first.expires_at  # 60 s would shorten it: kept
        assert await storage.features(["r1", "nope"]) == {"r1": b"features-1"}
        assert await storage.read("r1") == record
        ttl_ms = await storage.client.pttl(storage.keys.reference("r1"))
        assert 0 < ttl_ms <= 3_600_000

        forever = _info("r2", 0)
        assert forever.expires_at is None
        await policy.keep(forever, b"f", 0)
        assert await storage.client.pttl(storage.keys.reference("r2")) == -1

    run_with_policy(scenario)


def test_a_refresh_only_ever_lengthens_a_lifetime(run_with_policy: Callable[[Scenario], None]) -> None:
    async def scenario(policy: ReferencePolicy[bytes]) -> None:
        storage = _storage(policy)
        info = _info("r1", 10)
        await storage.save(info, b"f")
        extended = await policy.refresh("r1", 7200, None)
        assert extended is not None and extended.name == info.name and extended.created_at == info.created_at
        assert extended.expires_at is not None and info.expires_at is not None
        assert extended.expires_at > info.expires_at + timedelta(hours=1)
        assert await storage.read("r1") == extended
        assert await storage.client.pttl(storage.keys.reference("r1")) > 3_600_000
        shorter = await policy.refresh("r1", 0.001, None)  # a shorter lifetime is ignored
        assert shorter is not None and shorter.expires_at == extended.expires_at
        assert await storage.client.pttl(storage.keys.reference("r1")) > 3_600_000
        forever = await policy.refresh("r1", 0, None)
        assert forever is not None and forever.expires_at is None
        assert await storage.client.pttl(storage.keys.reference("r1")) == -1
        again = await policy.refresh("r1", 10, None)  # forever stays forever
        assert again is not None and again.expires_at is None
        assert await storage.client.pttl(storage.keys.reference("r1")) == -1
        assert await policy.refresh("missing", 10, None) is None

    run_with_policy(scenario)


def test_pages_are_newest_first_and_skip_expired(run_with_policy: Callable[[Scenario], None]) -> None:
    async def scenario(policy: ReferencePolicy[bytes]) -> None:
        now = datetime.now(UTC)
        for index in range(3):
            await policy.keep(_info(f"r{index}", 3600, now + timedelta(seconds=index)), b"f", 3600)
        await policy.keep(_info("old", 1, now - timedelta(hours=1)), b"f", 1)  # its expiry time has passed
        page = await policy.listing(ANY_TENANT, 0, 2)
        assert [i.reference_id for i in page.items] == ["r2", "r1"] and page.total == 3
        page = await policy.listing(ANY_TENANT, 2, 10)
        assert [i.reference_id for i in page.items] == ["r0"] and page.total == 3
        await policy.delete("r1", ANY_TENANT)
        with pytest.raises(ReferenceNotFound):
            await policy.delete("r1", ANY_TENANT)
        page = await policy.listing("default", 0, 10)
        assert [i.reference_id for i in page.items] == ["r2", "r0"] and page.total == 2

    run_with_policy(scenario)


def test_a_delete_with_a_version_spares_a_reference_refreshed_meanwhile(
        run_with_policy: Callable[[Scenario], None]) -> None:
    async def scenario(policy: ReferencePolicy[bytes]) -> None:
        mine, _ = await policy.keep(_info("r1", 300, owner="alpha"), b"f", 300)
        theirs = await policy.refresh("r1", 86_400, None)  # someone stores the same reference again
        assert theirs is not None
        await policy.delete("r1", "alpha", version=mine.version)  # the failed request's cleanup
        assert await policy.resolve("r1", "alpha") == theirs
        await policy.delete("r1", "alpha", version=theirs.version)
        with pytest.raises(ReferenceNotFound):
            await policy.resolve("r1", "alpha")
        assert (await policy.listing("alpha", 0, 10)).total == 0

    run_with_policy(scenario)


def test_a_corrupt_record_is_a_410_dropped_from_the_listing(run_with_policy: Callable[[Scenario], None],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(policy: ReferencePolicy[bytes]) -> None:
        storage = _storage(policy)
        for reference_id in ("bad1", "bad2", "good"):
            await policy.keep(_info(reference_id, 3600, owner="alpha"), b"f", 3600)
        for reference_id in ("bad1", "bad2"):
            await storage.client.hset(storage.keys.reference(reference_id), "info", b"{not json")
        with pytest.raises(CorruptReference):
            await policy.resolve("bad1", "alpha")
        assert not await storage.client.exists(storage.keys.reference("bad1"))
        with pytest.raises(ReferenceNotFound):
            await policy.resolve("bad1", "alpha")
        page = await policy.listing("alpha", 0, 10)  # bad1 is still listed for its owner: taken off now
        assert [i.reference_id for i in page.items] == ["good"] and page.total == 1
        assert not await storage.client.exists(storage.keys.reference("bad2"))
        assert [i.reference_id for i in (await policy.listing(ANY_TENANT, 0, 10)).items] == ["good"]
        assert (await policy.listing("alpha", 0, 10)).total == 1

    with caplog.at_level(logging.ERROR, "insid3.references"):
        run_with_policy(scenario)
    assert sum("corrupt in storage and is dropped" in r.message for r in caplog.records) == 2
