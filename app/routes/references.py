"""``/references``: encode, store, inspect and forget reference features."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile

from app.auth import TenantDep
from app.dependencies import BackendDep, DeadlineDep
from app.errors import error_responses
from app.schemas import ReferenceInfo, ReferenceList

router = APIRouter(prefix="/references", tags=["references"])

MAX_TTL_S = 10 * 365 * 86_400.0
ReferenceId = Annotated[str, Path(min_length=1, max_length=128, description="The id returned at creation.")]


@router.post(
    "",
    status_code=201,
    response_model=ReferenceInfo,
    responses={
        200: {"model": ReferenceInfo,
              "description": "An identical reference of yours existed (its expiry is extended, never "
                             "shortened; a name given renames it)."},
        **error_responses(401, 403, 413, 415, 422, 502, 503, 504, 507),
    },
    summary="Encode and store a reference",
)
async def create_reference(
    response: Response,
    backend: BackendDep,
    deadline: DeadlineDep,
    caller: TenantDep,
    image: Annotated[UploadFile, File(description="The reference image.")],
    mask: Annotated[UploadFile, File(description="Its mask: any non-zero pixel is foreground.")],
    name: Annotated[str | None, Form(max_length=256, description="A label for your own bookkeeping.")] = None,
    ttl_s: Annotated[
        float | None,
        Form(ge=0, le=MAX_TTL_S, description="Lifetime in seconds (0: forever; default INSID3_REFERENCE_TTL_S)."),
    ] = None,
) -> ReferenceInfo:
    """201 with the new reference; 200 when the same image, mask and model made it already
    (the id is the content hash of the upload and your tenant)."""
    record, created = await backend.create_reference(
        await image.read(), await mask.read(), name or None, ttl_s, deadline, owner=caller.tenant,
    )
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/references/{record.reference_id}"
    return ReferenceInfo.of(record)


@router.get("", response_model=ReferenceList, responses=error_responses(401, 422, 503), summary="List references")
async def list_references(
    backend: BackendDep,
    caller: TenantDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> ReferenceList:
    """Your live references (an admin key: everyone's), newest first."""
    return ReferenceList.of(await backend.list_references(offset, limit, scope=caller.scope))


@router.get(
    "/{reference_id}", response_model=ReferenceInfo, responses=error_responses(401, 404, 410, 422, 503),
    summary="Get a reference",
)
async def get_reference(reference_id: ReferenceId, backend: BackendDep, caller: TenantDep) -> ReferenceInfo:
    """The reference's metadata (404 for another tenant's reference)."""
    return ReferenceInfo.of(await backend.get_reference(reference_id, scope=caller.scope))


@router.delete(
    "/{reference_id}", status_code=204, responses=error_responses(401, 404, 410, 422, 503),
    summary="Delete a reference",
)
async def delete_reference(reference_id: ReferenceId, backend: BackendDep, caller: TenantDep) -> Response:
    """Forget the reference and its features (404 for another tenant's reference)."""
    await backend.delete_reference(reference_id, scope=caller.scope)
    return Response(status_code=204)
