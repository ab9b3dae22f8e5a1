"""``POST /match``: map reference points to a target image."""

from __future__ import annotations

import json
import math
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.auth import TenantDep
from app.dependencies import BackendDep, DeadlineDep, SettingsDep
from app.errors import error_responses
from app.inline_references import InlineReferences
from app.schemas import MatchedPoint, MatchResponse
from core.errors import InvalidInputError

router = APIRouter(tags=["matching"])


def _is_number(value: object) -> bool:
    """A JSON number that is a finite float (an integer too large for a float is not)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float's range
        return False


def parse_points(text: str, max_points: int) -> list[tuple[float, float]]:
    """``[[x, y], ...]`` as JSON into finite (x, y) pairs, or a clear ``InvalidInputError``."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: brackets nested past the parser's depth
        value = None
    if (
        not isinstance(value, list) or not value
        or not all(isinstance(p, list) and len(p) == 2 for p in value)
        or not all(_is_number(c) for p in value for c in p)
    ):
        raise InvalidInputError("points must be a non-empty JSON list of [x, y] pairs of finite numbers "
                                "(within a float's range), e.g. [[120, 80]]")
    if len(value) > max_points:
        raise InvalidInputError(f"{len(value)} points, over the limit of {max_points} (INSID3_MAX_POINTS)")
    return [(float(x), float(y)) for x, y in value]


def _check_inside(points: list[tuple[float, float]], width: int, height: int) -> None:
    """Every point lies inside the reference image."""
    outside = [(x, y) for x, y in points if not (0 <= x < width and 0 <= y < height)]
    if outside:
        raise InvalidInputError(
            f"{len(outside)} point(s) outside the {width}x{height} reference, e.g. {list(outside[0])}"
        )


@router.post(
    "/match",
    response_model=MatchResponse,
    responses=error_responses(401, 403, 404, 409, 410, 413, 415, 422, 502, 503, 504, 507),
    summary="Match reference points to a target",
)
async def match(
    backend: BackendDep,
    settings: SettingsDep,
    deadline: DeadlineDep,
    caller: TenantDep,
    target: Annotated[UploadFile, File(description="The target image.")],
    points: Annotated[str, Form(description="JSON [[x, y], ...] in reference image pixels.")],
    reference_id: Annotated[str | None, Form(max_length=128, description="A stored reference.")] = None,
    reference_image: Annotated[UploadFile | None, File(description="Or an inline reference image.")] = None,
    debiased: Annotated[bool, Form(description="Match on debiased features (default true).")] = True,
) -> MatchResponse:
    """The target point of every reference point, with a confidence each."""
    started = time.perf_counter()
    if (reference_id is None) == (reference_image is None):
        raise InvalidInputError("give exactly one of reference_id or reference_image")
    keypoints = parse_points(points, settings.max_points)
    async with InlineReferences(backend, caller, settings.inline_reference_ttl_s, deadline) as inline:
        if reference_image is not None:
            [info] = await inline.create([(await reference_image.read(), None)])
        else:
            assert reference_id is not None
            info = await backend.get_reference(reference_id, scope=caller.scope)
        _check_inside(keypoints, info.width, info.height)
        result = await backend.match(await target.read(), info, keypoints, debiased, deadline)
    timings = {name: round(value, 3) for name, value in result.timings.items()}
    timings["total_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
    return MatchResponse(
        reference_id=info.reference_id,
        points=[
            MatchedPoint(x=float(x), y=float(y), confidence=float(c))
            for (x, y), c in zip(result.points.tolist(), result.confidence.tolist(), strict=True)
        ],
        timings=timings,
    )
