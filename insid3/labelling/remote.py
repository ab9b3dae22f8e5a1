"""Labelling through a running service (``insid3 label --server URL``): the examples stored once as
references, then ``concurrency`` targets in flight at a time, one ``/segment`` call per target and
category, each retried by the client on connection errors and 503s within its deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from core.errors import Insid3Error, InvalidInputError
from insid3.client import AsyncClient, Client, ClientError, Reference, SegmentResult
from insid3.labelling.runner import Job, Record, Sink, failed_record, target_record
from insid3.labelling.sources import Example, Target

FILE_STATUSES = frozenset({413, 415, 422})  # this image can't be used: recorded as failed, never retried
LOST_REFERENCE_CODES = frozenset({"reference_not_found", "reference_corrupt"})  # expired or evicted: store again


class RemoteLabeller:
    """The service at ``url`` labels; ``model`` is what its references say made them."""

    def __init__(self, url: str, api_key: str | None, concurrency: int, job: Job, timeout_s: float) -> None:
        self.url, self.api_key, self.job, self.timeout_s = url, api_key, job, timeout_s
        self.concurrency = concurrency
        with Client(url, api_key, timeout=timeout_s) as client:
            stored = [[self._store(client, example) for example in items] for items in job.categories.values()]
        self.reference_ids = [[reference.reference_id for reference in items] for items in stored]
        self.model = f"{stored[0][0].model}@{stored[0][0].image_size}"

    def _store(self, client: Client, example: Example) -> Reference:
        try:
            return client.add_reference(example.image, example.mask)
        except ClientError as exc:
            if exc.status in FILE_STATUSES:
                raise InvalidInputError(f"reference {example.image} with mask {example.mask}: {exc.detail}") from None
            raise Insid3Error(f"{self.url}: {exc}") from None

    def label(self, targets: Sequence[Target], sink: Sink) -> None:
        try:
            asyncio.run(self._label(targets, sink))
        except ClientError as exc:
            raise Insid3Error(f"{self.url}: {exc}") from None

    async def _label(self, targets: Sequence[Target], sink: Sink) -> None:
        pending = iter(targets)  # shared by the workers: each target is taken once
        async with AsyncClient(self.url, self.api_key, timeout=self.timeout_s,
                               max_connections=self.concurrency) as client:
            async def work() -> None:
                for target in pending:
                    sink(await self._one(client, target))

            await asyncio.gather(*(work() for _ in range(self.concurrency)))

    async def _one(self, client: AsyncClient, target: Target) -> Record:
        """The record of one target: every category's prediction, or why it failed."""
        annotations: list[dict[str, Any]] = []
        result: SegmentResult | None = None
        for category_id in range(1, len(self.reference_ids) + 1):
            try:
                result = await self._segment(client, target, category_id)
            except OSError as exc:
                return failed_record(target, f"cannot read the file: {exc}")
            except ClientError as exc:
                if exc.status in FILE_STATUSES:
                    return failed_record(target, exc.detail)
                if exc.status in (401, 403, 409):
                    raise
                return failed_record(target, f"{exc.code}: {exc.detail}", transient=True)
            annotations += _annotations(result, category_id, self.job.instances)
        assert result is not None
        return target_record(target, result.width, result.height, annotations)

    async def _segment(self, client: AsyncClient, target: Target, category_id: int) -> SegmentResult:
        """One target with one category's references; references the service lost are stored again
        (the same image and mask give the same id) and the call made once more."""
        async def call() -> list[SegmentResult]:
            return await client.segment([target.path], self.reference_ids[category_id - 1], self.job.tau,
                                        self.job.merge_threshold, self.job.instances)

        try:
            [result] = await call()
        except ClientError as exc:
            if exc.code not in LOST_REFERENCE_CODES:
                raise
            examples = list(self.job.categories.values())[category_id - 1]
            for example in examples:
                await client.add_reference(example.image, example.mask)
            [result] = await call()
        return result


def _annotations(result: SegmentResult, category_id: int, instances: bool) -> list[dict[str, Any]]:
    """The journal's annotations from the API's RLE (as ``mask_annotations`` makes them in-process)."""
    parts = ([(i.rle, i.area, i.bbox) for i in result.instances or []] if instances
             else [(result.rle, result.area, result.bbox)] if result.area else [])
    return [{"category_id": category_id, "score": result.score, "area": area, "bbox": list(bbox), "rle": rle}
            for rle, area, bbox in parts]
