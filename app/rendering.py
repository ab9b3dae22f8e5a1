"""Turning engine results into response bodies (runs in a worker thread: it is CPU work)."""

from __future__ import annotations

import base64

from app.masks import encode_rle, mask_png, mask_polygons, overlay_png, split_instances
from app.schemas import RLE, Instance, SegmentFormat, TargetResult
from core.images import load_image
from core.types import SegmentationResult, mask_bbox

OVERLAY_MAX_SIDE = 4096  # overlays of larger targets are drawn reduced by an integer factor


def result_png(result: SegmentationResult, target: bytes, fmt: SegmentFormat, max_pixels: int) -> bytes:
    """The mask (``png``) or the target with the mask drawn on it (``overlay``, at most
    ``OVERLAY_MAX_SIDE`` px on its long side) as a PNG."""
    if fmt == "overlay":
        return overlay_png(load_image(target, max_pixels, max_side=OVERLAY_MAX_SIDE), result.mask)
    return mask_png(result.mask)


def target_result(
    index: int, filename: str | None, result: SegmentationResult, target: bytes, fmt: SegmentFormat,
    instances: bool, max_pixels: int,
) -> TargetResult:
    """The JSON body of one target's prediction in ``fmt`` (PNGs base64-encoded)."""
    mask = result.mask
    body = TargetResult(
        index=index, filename=filename, width=int(mask.shape[1]), height=int(mask.shape[0]),
        area=result.area, bbox=_listed(result.bbox), score=result.score,
        timings={name: round(value, 3) for name, value in result.timings.items()},
    )
    if fmt == "rle":
        body.rle = RLE.model_validate(encode_rle(mask))
    elif fmt == "polygons":
        body.polygons = mask_polygons(mask)
    else:
        body.png = base64.b64encode(result_png(result, target, fmt, max_pixels)).decode("ascii")
    if instances:
        body.instances = [
            Instance(
                area=int(part.sum()), bbox=_listed(mask_bbox(part)) or [0, 0, 0, 0],
                rle=RLE.model_validate(encode_rle(part)),
                polygons=mask_polygons(part) if fmt == "polygons" else None,
            )
            for part in split_instances(mask)
        ]
    return body


def _listed(bbox: tuple[int, int, int, int] | None) -> list[int] | None:
    """A bbox as the JSON body carries it: [x, y, width, height], None when empty."""
    return None if bbox is None else list(bbox)
