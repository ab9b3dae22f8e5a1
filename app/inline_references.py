"""References a request brings inline: encoded for it, and forgotten again when it fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

from app.auth import Principal
from core.serving import InferenceBackend, StoredReference

log = logging.getLogger("insid3.app")


class InlineReferences:
    """Creates a request's inline references, kept ``ttl_s`` (INSID3_INLINE_REFERENCE_TTL_S). Used as
    ``async with``, the ones this request newly created are deleted when the block fails (an error,
    a deadline, a client gone), so a failed request leaves nothing behind. The delete compares the
    record's version (``core.references``): references that existed already, or that someone stored
    again or refreshed meanwhile, are left alone."""

    def __init__(self, backend: InferenceBackend, caller: Principal, ttl_s: float, deadline: float) -> None:
        self._backend = backend
        self._caller = caller
        self._ttl_s = ttl_s
        self._deadline = deadline
        self._created: list[StoredReference] = []

    async def __aenter__(self) -> InlineReferences:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if error is not None and self._created:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._forget(list(self._created)))

    async def create(self, pairs: list[tuple[bytes, bytes | None]]) -> list[StoredReference]:
        """Encode and store every (image, mask) pair; when one fails, its error is raised once
        the others finished (so that every reference created is known)."""
        outcomes = await asyncio.gather(*(self._create(image, mask) for image, mask in pairs),
                                        return_exceptions=True)
        failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
        if failure is not None:
            raise failure
        return [outcome for outcome in outcomes if isinstance(outcome, StoredReference)]

    async def _create(self, image: bytes, mask: bytes | None) -> StoredReference:
        record, created = await self._backend.create_reference(image, mask, None, self._ttl_s, self._deadline,
                                                              owner=self._caller.tenant)
        if created:
            self._created.append(record)
        return record

    async def _forget(self, records: list[StoredReference]) -> None:
        for record in records:
            try:
                await self._backend.delete_reference(record.reference_id, scope=record.owner, version=record.version)
            except Exception as exc:  # already gone (expired, deleted by someone) or the store is down
                log.warning("could not delete inline reference %s of a failed request: %s", record.reference_id, exc)
