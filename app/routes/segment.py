"""``POST /segment``: segment targets with stored or inline references (k-shot)."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from app.auth import TenantDep
from app.dependencies import BackendDep, DeadlineDep, RenderDep, RenderSlots, SettingsDep
from app.errors import error_responses
from app.inline_references import InlineReferences
from app.rendering import result_png, target_result
from app.schemas import SegmentFormat, SegmentResponse, TargetResult
from app.settings import Settings
from core.errors import InvalidInputError
from core.types import SegmentationResult

router = APIRouter(tags=["segmentation"])


def _split_ids(values: list[str] | None) -> list[str]:
    """Ids given as repeated fields and/or comma-separated."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _check_shape(settings: Settings, targets: int, ids: list[str], images: int, masks: int) -> None:
    """Every per-request limit, checked before any upload is read or any work starts."""
    if targets > settings.max_targets:
        raise InvalidInputError(f"{targets} targets, over the limit of {settings.max_targets} (INSID3_MAX_TARGETS)")
    if images != masks:
        raise InvalidInputError(
            f"{images} reference_image file(s) but {masks} reference_mask file(s): give them in pairs"
        )
    if not ids and not images:
        raise InvalidInputError("give reference_ids or reference_image + reference_mask pairs")
    if len(ids) + images > settings.max_shots:
        raise InvalidInputError(
            f"{len(ids) + images} references, over the limit of {settings.max_shots} (INSID3_MAX_SHOTS)"
        )


async def _render(
    slots: RenderSlots, deadline: float, uploads: list[UploadFile], targets: list[bytes],
    results: list[SegmentationResult], fmt: SegmentFormat, instances: bool, max_pixels: int,
) -> Response | list[TargetResult]:
    """One PNG (``png``/``overlay``, one target, no instances), else the JSON body of every target."""
    if fmt in ("png", "overlay") and len(targets) == 1 and not instances:
        [result] = results
        png = await slots.run(partial(result_png, result, targets[0], fmt, max_pixels), deadline)
        return Response(png, media_type="image/png", headers={
            "X-Insid3-Area": str(result.area),
            "X-Insid3-Bbox": ",".join(map(str, result.bbox or ())),
            "X-Insid3-Score": f"{result.score:.6f}",
        })
    return await slots.run(lambda: [
        target_result(i, upload.filename, result, data, fmt, instances, max_pixels)
        for i, (upload, result, data) in enumerate(zip(uploads, results, targets, strict=True))
    ], deadline)


@router.post(
    "/segment",
    response_model=SegmentResponse,
    response_model_exclude_none=True,
    responses={
        200: {
            "description": "JSON results; a PNG for format=png/overlay with one target and instances=false.",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(401, 403, 404, 409, 410, 413, 415, 422, 502, 503, 504, 507),
    },
    summary="Segment targets like the references",
)
async def segment(
    backend: BackendDep,
    settings: SettingsDep,
    deadline: DeadlineDep,
    slots: RenderDep,
    caller: TenantDep,
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
    ids = _split_ids(reference_ids)
    images, masks = reference_image or [], reference_mask or []
    _check_shape(settings, len(target), ids, len(images), len(masks))
    resolved = {reference_id: await backend.get_reference(reference_id, scope=caller.scope)  # 404 before any encoding
                for reference_id in dict.fromkeys(ids)}
    pairs: list[tuple[bytes, bytes | None]] = [
        (await image.read(), await mask.read()) for image, mask in zip(images, masks, strict=True)
    ]
    targets = [await upload.read() for upload in target]
    async with InlineReferences(backend, caller, settings.inline_reference_ttl_s, deadline) as inline:
        references = [resolved[reference_id] for reference_id in ids] + await inline.create(pairs)
        ids = [record.reference_id for record in references]
        results = await backend.segment(targets, references, tau, merge_threshold, deadline)
        rendered = await _render(slots, deadline, target, targets, results, format, instances, settings.max_pixels)
    if isinstance(rendered, Response):
        return rendered
    total_ms = (time.perf_counter() - started) * 1000.0
    return SegmentResponse(reference_ids=ids, format=format, results=rendered,
                           timings={"total_ms": round(total_ms, 3)})
