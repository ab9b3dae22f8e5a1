"""The Label Studio ML-backend protocol under ``/labelstudio``: health, setup, predict, webhook,
train. Label Studio authenticates with HTTP basic auth whose password is an API key
(``app.auth``): the key's tenant owns the project's examples."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from app.auth import TenantDep
from app.dependencies import BackendDep, RenderDep, SettingsDep
from app.errors import ErrorResponse, error_response, error_responses
from app.labelstudio.config import parse_label_config
from app.labelstudio.examples import model_version, project_examples
from app.labelstudio.predict import predict, project_id
from app.labelstudio.remote import LabelStudio, LabelStudioUnreachable
from app.labelstudio.sync import CHANGED, DELETED, RESYNC, Event, ExampleSync
from core.errors import InvalidInputError

log = logging.getLogger("insid3.labelstudio")

router = APIRouter(prefix="/labelstudio", tags=["label studio"])
MODEL_CLASS = "INSID3"
UNREACHABLE = {502: {"model": ErrorResponse, "description": "Label Studio (INSID3_LABEL_STUDIO_URL) did not "
                     "answer, or refused INSID3_LABEL_STUDIO_TOKEN (label_studio_unreachable)."}}


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or a clear 422."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInputError("the body must be JSON (Content-Type: application/json)") from None
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a JSON object")
    return body


BodyDep = Annotated[dict[str, Any], Depends(json_body)]


def example_sync(request: Request) -> ExampleSync:
    state = request.app.state
    if getattr(state, "label_studio_sync", None) is None:
        state.label_studio_sync = ExampleSync(state.backend, state.settings)
    return state.label_studio_sync


@router.get("/health", responses=error_responses(401, 503), summary="Label Studio: health")
@router.get("/", include_in_schema=False)
async def health(backend: BackendDep) -> Any:
    """``{"status": "UP"}`` once the model can serve (503 naming the reason before)."""
    reason = await backend.readiness()
    if reason is not None:
        return error_response(503, "model_unavailable", reason)
    return {"status": "UP", "model_class": MODEL_CLASS}


@router.post("/setup", responses=error_responses(401, 422, 503), summary="Label Studio: connect a project")
async def setup(request: Request, body: BodyDep, backend: BackendDep, settings: SettingsDep,
                caller: TenantDep) -> dict[str, str]:
    """Checks the labeling config, gives the project's webhook this caller's credentials (when
    INSID3_LABEL_STUDIO_TOKEN is set) and answers the current model version."""
    parse_label_config(body.get("schema"))
    project = project_id(body.get("project"))
    authorization = request.headers.get("authorization")
    if authorization:
        async with LabelStudio(settings.label_studio_url, settings.label_studio_token, 0) as studio:
            try:
                await studio.authorize_webhook(project, authorization)
            except LabelStudioUnreachable as exc:
                log.warning("could not set the webhook's credentials of project %s: %s", project, exc.detail)
    return {"model_version": model_version(await project_examples(backend, caller.tenant, project))}


@router.post("/predict", summary="Label Studio: predict tasks",
             responses={**error_responses(401, 403, 404, 409, 410, 413, 415, 422, 503, 504, 507), **UNREACHABLE})
async def predict_tasks(body: BodyDep, backend: BackendDep, settings: SettingsDep, render: RenderDep,
                        caller: TenantDep) -> Any:
    """``{"results": [one prediction per task, in order]}``: a brush mask per label with examples
    and the keypoints of the newest keypoint annotation."""
    return await predict(backend, settings, render, caller.tenant, body)


def _annotation_ids(body: dict[str, Any]) -> list[int]:
    annotations = body.get("annotations") if body.get("action") == DELETED else [body.get("annotation")]
    if not isinstance(annotations, list):
        return []
    ids = [item.get("id") for item in annotations if isinstance(item, dict)]
    return ids if ids and all(isinstance(value, int) for value in ids) else []


@router.post("/webhook", status_code=201,
             responses={200: {"description": "An event this backend ignores."}, **error_responses(401, 422, 503)},
             summary="Label Studio: annotation events")
async def webhook(body: BodyDep, caller: TenantDep, sync: Annotated[ExampleSync, Depends(example_sync)]) -> Any:
    """Annotations created, updated and deleted become, change and remove the project's examples
    (queued, applied in order); other events are acknowledged and ignored."""
    action = body.get("action")
    if action not in (*CHANGED, DELETED, RESYNC):
        return JSONResponse({"status": "Unknown event", "action": action}, status_code=200)
    if action == RESYNC and isinstance(body.get("project"), dict) and str(body["project"].get("id")).isdigit():
        sync.submit(Event(caller.tenant, RESYNC, {"project": body["project"]}))
        return {"status": "ok", "queued": True}
    if not isinstance(body.get("project"), dict) or not _annotation_ids(body):
        raise InvalidInputError(f"a {action} webhook needs 'project' and the annotation(s) with their ids "
                                "(the webhook's send_payload on)")
    sync.submit(Event(caller.tenant, str(action), body))
    return {"status": "ok", "queued": True}


@router.post("/train", responses=error_responses(401, 422, 503), summary="Label Studio: train (resynchronise)")
async def train(body: BodyDep, caller: TenantDep, sync: Annotated[ExampleSync, Depends(example_sync)]) -> Any:
    """Nothing to train: the annotated tasks sent make the project's examples again (a resync)."""
    project = {"id": project_id(body.get("project")), "label_config": body.get("label_config")}
    parse_label_config(project["label_config"])
    tasks = body.get("annotations")
    if not isinstance(tasks, list) or not all(isinstance(task, dict) for task in tasks):
        raise InvalidInputError("'annotations' must be the list of annotated tasks")
    sync.submit(Event(caller.tenant, RESYNC, {"project": project, "tasks": tasks}))
    return {"status": "ok", "queued": True}


async def _unreachable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LabelStudioUnreachable)
    return error_response(502, exc.code, exc.detail)


def install(app: FastAPI, dependencies: list[Any]) -> None:
    """Serve the protocol on ``app`` with the service's route ``dependencies`` (its documented
    X-API-Key; the basic auth Label Studio sends is accepted as well, by ``app.auth``)."""
    app.include_router(router, dependencies=dependencies)
    app.add_exception_handler(LabelStudioUnreachable, _unreachable)
