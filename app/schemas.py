"""Response bodies of the model endpoints (the OpenAPI schema is generated from them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, Field

from core.serving import ReferencePage, StoredReference

SegmentFormat = Literal["rle", "png", "polygons", "overlay"]


class ReferenceInfo(BaseModel):
    """What the service knows about a stored reference (never the features themselves)."""

    reference_id: str = Field(description="Content hash of the image, mask, engine configuration and tenant.")
    name: str | None = Field(default=None, description="Free-form label given at creation.")
    width: int = Field(description="Width of the reference image in pixels.")
    height: int = Field(description="Height of the reference image in pixels.")
    mask_area: int = Field(description="Foreground pixels of the mask as uploaded (0: match-only reference).")
    model: str = Field(description="The engine's model id, e.g. dinov3_vitl16-0123456789ab.")
    image_size: int = Field(description="Side of the square the engine resizes images to.")
    created_at: datetime
    expires_at: datetime | None = Field(default=None, description="None: never expires.")
    owner: str = Field(description="The tenant that created it (with API keys off: default).")

    @classmethod
    def of(cls, record: StoredReference) -> Self:
        return cls(
            reference_id=record.reference_id, name=record.name, width=record.width, height=record.height,
            mask_area=record.mask_area, model=record.model, image_size=record.image_size,
            created_at=record.created_at, expires_at=record.expires_at, owner=record.owner,
        )


class ReferenceList(BaseModel):
    """One page of references, newest first."""

    items: list[ReferenceInfo]
    total: int
    offset: int
    limit: int

    @classmethod
    def of(cls, page: ReferencePage) -> Self:
        return cls(items=[ReferenceInfo.of(r) for r in page.items], total=page.total, offset=page.offset,
                   limit=page.limit)


class RLE(BaseModel):
    """COCO compressed RLE: ``pycocotools.mask.decode({"size": size, "counts": counts.encode()})``."""

    size: list[int] = Field(description="[height, width]")
    counts: str


class Instance(BaseModel):
    """One connected component of the predicted mask."""

    area: int
    bbox: list[int] = Field(description="[x, y, width, height]")
    rle: RLE
    polygons: list[list[float]] | None = Field(default=None, description="Only with format=polygons.")


class TargetResult(BaseModel):
    """The prediction for one target image."""

    index: int = Field(description="Position of the target in the request.")
    filename: str | None = None
    width: int
    height: int
    area: int = Field(description="Foreground pixels of the mask.")
    bbox: list[int] | None = Field(default=None, description="[x, y, width, height]; absent for an empty mask.")
    score: float = Field(description="Mean similarity of the kept patches to the reference prototype (0: empty).")
    timings: dict[str, float] = Field(description="Milliseconds per engine stage.")
    rle: RLE | None = Field(default=None, description="format=rle.")
    polygons: list[list[float]] | None = Field(
        default=None, description="format=polygons: [x1, y1, x2, y2, ...] outer boundaries in pixel corners."
    )
    png: str | None = Field(default=None, description="format=png/overlay with several targets: base64 PNG.")
    instances: list[Instance] | None = Field(default=None, description="instances=true, largest first.")


class SegmentResponse(BaseModel):
    """Every target's prediction, in request order."""

    reference_ids: list[str]
    format: SegmentFormat
    results: list[TargetResult]
    timings: dict[str, float] = Field(description="total_ms: the whole request as seen by the server.")


class MatchedPoint(BaseModel):
    """A reference point mapped to the target."""

    x: float
    y: float
    confidence: float = Field(description="Cosine similarity at the best-matching target patch.")


class MatchResponse(BaseModel):
    """The target points, in the order of the request's points."""

    reference_id: str
    points: list[MatchedPoint]
    timings: dict[str, float]


class Readiness(BaseModel):
    """``/readyz``: ready, or the reason why not."""

    ready: bool
    reason: str | None = None
    mode: Literal["embedded", "redis"]
    models: list[str] | None = Field(
        default=None, description="Redis mode: the models live workers serve, as model_id@image_size (several "
                                  "during a rolling upgrade: each reads only its own jobs).")
    advice: str | None = Field(default=None, description="embedded mode, insid3 serve: one target's latency "
                                                         "measured at start, and what it means for the deadline")
    request_timeout_s: float = Field(description="the deadline a request gets (raised at start when unset and "
                                                 "one target's latency needs more)")
    encoder: dict[str, Any] | None = Field(
        default=None, description="Embedded mode: the encoder runtime and precision, and when `auto` chose it, "
                                  "every candidate's measured ms, probe max-abs and mask IoU vs torch fp32 "
                                  "(Redis mode: see each worker's metrics).")
