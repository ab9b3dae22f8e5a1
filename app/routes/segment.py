"""``POST /segment``: segment targets with stored or inline references (k-shot)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from app.dependencies import BackendDep, DeadlineDep, SettingsDep
from app.errors import error_responses
from app.rendering import result_png, target_result
from app.schemas import SegmentFormat, SegmentResponse
from core.errors import InvalidInputError
from core.serving import InferenceBackend

router = APIRouter(tags=["segmentation"])


def _split_ids(values: list[str] | None) -> list[str]:
    """Ids given as repeated fields and/or comma-separated."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


async def _inline_references(
    backend: InferenceBackend, images: list[UploadFile], masks: list[UploadFile], ttl_s: float, deadline: float
) -> list[str]:
    if len(images) != len(masks):
        raise InvalidInputError(
            f"{len(images)} reference_image file(s) but {len(masks)} reference_mask file(s): give them in pairs"
        )
    pairs = [(await image.read(), await mask.read()) for image, mask in zip(images, masks, strict=True)]
    created = await asyncio.gather(
        *(backend.create_reference(image, mask, None, ttl_s, deadline) for image, mask in pairs)
    )
    return [info.reference_id for info, _ in created]


@router.post(
    "/segment",
    response_model=SegmentResponse,
    response_model_exclude_none=True,
    responses={
        200: {
            "description": "JSON results; a PNG for format=png/overlay with one target and instances=false.",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(401, 404, 409, 410, 413, 415, 422, 503, 504, 507),
    },
    summary="Segment targets like the references",
)
async def segment(
    backend: BackendDep,
    settings: SettingsDep,
    deadline: DeadlineDep,
    target: Annotated[list[UploadFile], File(description="One or more target images.")],
    reference_ids: Annotated[
        list[str] | None, Form(description="Stored reference ids (repeat the field or comma-separate): k-shot.")
    ] = None,
    reference_image: Annotated[
        list[UploadFile] | None, File(description="Inline reference images, paired with reference_mask.")
    ] = None,
    reference_mask: Annotated[list[UploadFile] | None, File(description="Masks of the inline references.")] = None,
    tau: Annotated[float | None, Form(ge=0, le=1, description="Clustering threshold (default 0.6).")] = None,
    merge_threshold: Annotated[
        float | None, Form(ge=0, le=1, description="Cluster aggregation threshold (default 0.2).")
    ] = None,
    format: Annotated[SegmentFormat, Form(description="rle (default), png, polygons or overlay.")] = "rle",
    instances: Annotated[bool, Form(description="Also split the mask into connected instances.")] = False,
) -> Response | SegmentResponse:
    """Segment every target with every reference; one result per target, in order."""
    started = time.perf_counter()
    if len(target) > settings.max_targets:
        raise InvalidInputError(f"{len(target)} targets, over the limit of {settings.max_targets} (INSID3_MAX_TARGETS)")
    ids = _split_ids(reference_ids)
    if reference_image or reference_mask:
        ids += await _inline_references(backend, reference_image or [], reference_mask or [],
                                        settings.inline_reference_ttl_s, deadline)
    if not ids:
        raise InvalidInputError("give reference_ids or reference_image + reference_mask pairs")
    if len(ids) > settings.max_shots:
        raise InvalidInputError(f"{len(ids)} references, over the limit of {settings.max_shots} (INSID3_MAX_SHOTS)")
    targets = [await upload.read() for upload in target]
    results = await backend.segment(targets, ids, tau, merge_threshold, deadline)
    if format in ("png", "overlay") and len(targets) == 1 and not instances:
        [result] = results
        png = await asyncio.to_thread(result_png, result, targets[0], format, settings.max_pixels)
        return Response(png, media_type="image/png", headers={
            "X-Insid3-Area": str(result.area),
            "X-Insid3-Bbox": ",".join(map(str, result.bbox or ())),
            "X-Insid3-Score": f"{result.score:.6f}",
        })
    bodies = await asyncio.to_thread(lambda: [
        target_result(i, upload.filename, result, data, format, instances, settings.max_pixels)
        for i, (upload, result, data) in enumerate(zip(target, results, targets, strict=True))
    ])
    total_ms = (time.perf_counter() - started) * 1000.0
    return SegmentResponse(reference_ids=ids, format=format, results=bodies, timings={"total_ms": round(total_ms, 3)})
