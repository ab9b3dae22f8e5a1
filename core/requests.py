"""The one vocabulary of work: what a caller asks the engine to do.

The embedded batcher hands these to ``Insid3.run_batch`` directly; the Redis pool carries the
same objects on the wire (``workers.codec``), where images are the uploaded bytes (the engine's
library methods also pass paths, PIL images or arrays). References are named by id; whoever runs
a batch resolves the ids to features first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from core.images import ImageInput

DEFAULT_TENANT = "default"  # the tenant of every request when API keys are off



@dataclass(frozen=True)
class ReferenceRequest:
    """Encode a reference image under its mask (None: match-only) and store it for ``ttl_s``
    (0: forever), owned by ``owner`` (a tenant id). ``key`` is the content hash when the caller computed it already."""

    image: ImageInput
    mask: ImageInput | None
    name: str | None = None
    ttl_s: float = 0.0
    key: str | None = None
    owner: str = DEFAULT_TENANT


@dataclass(frozen=True)
class SegmentRequest:
    """Segment ``target`` with one or more (k-shot) stored references."""

    target: ImageInput
    reference_ids: list[str]
    tau: float | None = None
    merge_threshold: float | None = None


@dataclass(frozen=True)
class MatchRequest:
    """Map ``points`` ((x, y) in reference pixels) from a stored reference into ``target``."""

    target: ImageInput
    reference_id: str
    points: Sequence[Sequence[float]] | np.ndarray
    debiased: bool = True


Request = ReferenceRequest | SegmentRequest | MatchRequest


def reference_ids(request: Request) -> list[str]:
    """The stored references ``request`` needs."""
    if isinstance(request, SegmentRequest):
        return request.reference_ids
    return [request.reference_id] if isinstance(request, MatchRequest) else []
