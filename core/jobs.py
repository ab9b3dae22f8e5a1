"""The unit of work shared by the embedded batching loop (app/) and the Redis workers (workers/).

``run_batch`` decodes every job's image, runs the backbone once over all of them (chunked by the
engine per device), then runs the per-job pipeline. A bad job yields its error in its slot
without failing the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

from core.engine import Insid3, PreparedReference
from core.errors import Insid3Error
from core.images import load_image
from core.types import EncodedImage, MatchResult, ReferenceFeatures, SegmentationResult


@dataclass(frozen=True)
class EncodeReferenceJob:
    """Encode a reference image (and its mask; None for a matching-only reference)."""

    image: bytes
    mask: bytes | None


@dataclass(frozen=True)
class SegmentJob:
    """Segment ``target`` with one or more (k-shot) references."""

    target: bytes
    references: list[ReferenceFeatures]
    tau: float | None = None
    merge_threshold: float | None = None


@dataclass(frozen=True)
class MatchJob:
    """Match ``points`` ((x, y) in reference pixels) from ``reference`` into ``target``."""

    target: bytes
    reference: ReferenceFeatures
    points: list[tuple[float, float]] = field(default_factory=list)
    debiased: bool = True


Job = EncodeReferenceJob | SegmentJob | MatchJob
Outcome = ReferenceFeatures | SegmentationResult | MatchResult | Insid3Error


def _prepare(engine: Insid3, job: Job) -> Image.Image | PreparedReference:
    """Decode and validate a job's input before the shared encoder pass."""
    if isinstance(job, EncodeReferenceJob):
        return engine.prepare_reference(job.image, job.mask)
    for reference in job.references if isinstance(job, SegmentJob) else [job.reference]:
        engine.check_reference(reference)
    return load_image(job.target, engine.options.max_pixels)


def _finish(engine: Insid3, job: Job, prepared: Image.Image | PreparedReference, encoded: EncodedImage) -> Outcome:
    """The per-job pipeline after the encoder pass."""
    if isinstance(job, EncodeReferenceJob):
        assert isinstance(prepared, PreparedReference)
        return engine.finish_reference(engine.reference_key(job.image, job.mask), prepared, encoded)
    if isinstance(job, SegmentJob):
        return engine.segment_encoded(encoded, job.references, job.tau, job.merge_threshold)
    return engine.match_encoded(encoded, job.reference, job.points, job.debiased)


def run_batch(engine: Insid3, jobs: Sequence[Job]) -> list[Outcome]:
    """Run ``jobs`` with one encoder pass over all their images; one outcome per job, in order."""
    outcomes: dict[int, Outcome] = {}
    pending: list[tuple[int, Image.Image | PreparedReference]] = []
    for index, job in enumerate(jobs):
        if isinstance(job, EncodeReferenceJob):
            cached = engine.cache.get(engine.reference_key(job.image, job.mask))
            if cached is not None:
                outcomes[index] = cached
                continue
        try:
            pending.append((index, _prepare(engine, job)))
        except Insid3Error as error:
            outcomes[index] = error
    images = [p.image if isinstance(p, PreparedReference) else p for _, p in pending]
    encoded = engine.encode_decoded(images) if images else []
    for (index, prepared), features in zip(pending, encoded, strict=True):
        try:
            outcomes[index] = _finish(engine, jobs[index], prepared, features)
        except Insid3Error as error:
            outcomes[index] = error
    return [outcomes[index] for index in range(len(jobs))]
