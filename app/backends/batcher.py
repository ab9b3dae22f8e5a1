"""The embedded batching loop: concurrent requests share encoder passes.

Jobs wait in a bounded queue; the loop takes up to ``max_batch`` of them (waiting at most
``max_wait_s`` for a batch to fill) and runs them in one ``Insid3.run_batch`` call on a single
worker thread. Jobs whose request gave up (deadline passed, client gone: its ``submit`` is
cancelled) leave the queue at once and are never run. A failure is the failing job's own: when
a whole batch call fails, its jobs are run again one by one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from core.requests import Request
from core.serving import DeadlineExceeded, ModelUnavailable, QueueFull
from core.types import ReferenceFeatures

References = Mapping[str, ReferenceFeatures]
RunBatch = Callable[[Sequence[Request], References], Sequence[object]]


@dataclass
class _Pending:
    request: Request
    references: References
    future: asyncio.Future[object]
    deadline: float


class BatchingLoop:
    """A bounded job queue drained in batches by one background task and one worker thread."""

    def __init__(self, run_batch: RunBatch, max_batch: int, max_wait_s: float, max_queue: int,
                 retry_after_s: float) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self._pending: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insid3-engine")
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Jobs queued and not yet taken into a batch."""
        return len(self._pending)

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.create_task(self._loop(), name="insid3-batching-loop")

    async def close(self) -> None:
        """Refuse new jobs, run every job already accepted, then stop the worker thread."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, jobs: Sequence[Request], references: References, deadline: float) -> list[object]:
        """Queue ``jobs`` (all or none) with the stored references they name and wait for their
        outcomes (a result or an exception each), raising ``QueueFull`` when they do not fit and
        ``DeadlineExceeded`` past ``deadline``."""
        if self._closing:
            raise ModelUnavailable("the server is shutting down")
        if len(self._pending) + len(jobs) > self.max_queue:
            raise QueueFull(
                self.retry_after_s,
                f"the job queue is full ({len(self._pending)} of {self.max_queue} jobs waiting); "
                f"retry in {self.retry_after_s:g} s",
            )
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in jobs]
        self._pending.extend(_Pending(job, references, future, deadline)
                             for job, future in zip(jobs, futures, strict=True))
        self._arrived.set()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.time())):
                return list(await asyncio.gather(*futures))
        except TimeoutError:
            raise DeadlineExceeded(
                "the request's deadline passed before its job finished; the job was dropped"
            ) from None
        finally:
            for future in futures:
                future.cancel()  # no-op for finished ones; unrun ones are then dropped
            self._drop_abandoned()

    def _drop_abandoned(self) -> None:
        """Forget queued jobs whose request gave up, so that they no longer count as queued."""
        if any(pending.future.done() for pending in self._pending):
            self._pending = deque(pending for pending in self._pending if not pending.future.done())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._fill()
            batch = self._take()
            if not batch:
                continue
            references = {key: value for pending in batch for key, value in pending.references.items()}
            results = await loop.run_in_executor(
                self._executor, self._run_isolated, [p.request for p in batch], references)
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)

    def _run_isolated(self, requests: Sequence[Request], references: References) -> Sequence[object]:
        """``run_batch`` over ``requests``; if the call itself fails, each request alone, so that
        one request's failure is never another's (worker thread)."""
        try:
            return self._run_batch(requests, references)
        except Exception as exc:
            if len(requests) == 1:
                return [exc]
        outcomes: list[object] = []
        for request in requests:
            try:
                outcomes += self._run_batch([request], references)
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def _fill(self) -> None:
        """Wait up to ``max_wait_s`` for the queue to hold a full batch."""
        end = time.monotonic() + self.max_wait_s
        while len(self._pending) < self.max_batch and not self._closing:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """Up to ``max_batch`` live jobs; those whose request gave up are dropped here."""
        batch: list[_Pending] = []
        now = time.time()
        while self._pending and len(batch) < self.max_batch:
            pending = self._pending.popleft()
            if pending.future.done():
                continue
            if pending.deadline <= now:
                pending.future.set_exception(DeadlineExceeded("the request's deadline passed while queued"))
                continue
            batch.append(pending)
        return batch
