"""A job entry of the stream: the envelope around one request (id, deadline, inbox, attempts)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from core.requests import Request
from workers.codec import ProtocolError, decode_request, encode_request, request_kind
from workers.connection import text


@dataclass(frozen=True)
class Job:
    """A job entry of the stream, as a worker sees it."""

    entry_id: str  # the stream entry id ("" before XADD)
    job_id: str
    kind: str
    deadline: float  # Unix time
    reply_to: str  # inbox key
    attempt: int  # 1 on first enqueue, +1 per retry
    body: bytes
    deliveries: int = 1  # deliveries of this entry (> 1 once reclaimed)

    @classmethod
    def new(cls, request: Request, deadline: float, reply_to: str) -> Job:
        """A fresh job (its entry id is assigned by XADD)."""
        return cls("", uuid.uuid4().hex, request_kind(request), deadline, reply_to, 1,
                   encode_request(request))

    @property
    def enqueued_at(self) -> float:
        """Unix time (Redis clock) the entry was added, from its id."""
        return int(self.entry_id.split("-", 1)[0]) / 1000.0

    @property
    def tries(self) -> int:
        """Times this job has been handed to a worker, this one included."""
        return self.attempt + self.deliveries - 1

    def fields(self, **extra: str | bytes) -> dict[str, str | bytes]:
        """The stream entry's fields."""
        return {"job": self.job_id, "kind": self.kind, "deadline": repr(self.deadline),
                "reply": self.reply_to, "attempt": str(self.attempt), "body": self.body, **extra}

    @classmethod
    def from_entry(cls, entry_id: bytes | str, fields: Mapping[bytes, bytes], deliveries: int = 1) -> Job:
        """Parse a stream entry; ``ProtocolError`` when fields are missing or malformed."""
        try:
            return cls(
                text(entry_id), fields[b"job"].decode(), fields[b"kind"].decode(),
                float(fields[b"deadline"]), fields[b"reply"].decode(), int(fields[b"attempt"]),
                fields[b"body"], deliveries,
            )
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed job entry {text(entry_id)}: {exc!r}") from None

    def request(self) -> Request:
        """The decoded request."""
        return decode_request(self.kind, self.body)
