"""Dependencies injected into the routes: settings, the backend, deadlines, repeated fields,
rendering slots (the caller's tenant: ``app.auth.TenantDep``)."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from app.masks import render_until
from app.settings import Settings
from core.memory import trim_heap
from core.serving import DeadlineExceeded, InferenceBackend
from core.startup import PROGRESS

T = TypeVar("T")


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_backend(request: Request) -> InferenceBackend:
    """The backend running the engine (embedded or Redis workers)."""
    return request.app.state.backend


SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendDep = Annotated[InferenceBackend, Depends(get_backend)]


TIMEOUT_HEADER = "X-Request-Timeout"


def request_deadline(
    request: Request,
    settings: SettingsDep,
    timeout: Annotated[
        float | None,
        Header(
            alias=TIMEOUT_HEADER, gt=0, allow_inf_nan=False,
            description="Seconds, finite; shortens (never extends) INSID3_REQUEST_TIMEOUT_S. Sent once.",
        ),
    ] = None,
) -> float:
    """The absolute Unix time by which the request must be answered (else 504); a repeated header is a 422."""
    given = len(request.headers.getlist(TIMEOUT_HEADER))
    if given > 1:
        raise RequestValidationError([_repeated("header", TIMEOUT_HEADER, given)])
    limit = default_timeout(settings)
    seconds = limit if timeout is None else min(timeout, limit)
    return time.time() + seconds


def default_timeout(settings: Settings) -> float:
    """``request_timeout_s`` as the user set it, else the default, or what the start's warm-up raised it to."""
    raised = PROGRESS.deadline_s
    if raised is None or "request_timeout_s" in settings.model_fields_set:
        return settings.request_timeout_s
    return raised


DeadlineDep = Annotated[float, Depends(request_deadline)]


def _is_sequence(annotation: Any) -> bool:
    """Whether a parameter annotation accepts several values (``list[...]``, optionally ``| None``)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_sequence(arg) for arg in get_args(annotation))
    return origin in (list, set, tuple, Sequence) or annotation in (list, set, tuple)


async def reject_repeated_fields(request: Request) -> None:
    """422 naming every single-valued form field or query parameter of the route that the
    request gives more than once (FastAPI would silently keep the last one)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    given: dict[str, list[Any]] = {}
    if route.dependant.query_params:
        given["query"] = [key for key, _ in request.query_params.multi_items()]
    content_type = request.headers.get("content-type", "")
    if route.dependant.body_params and content_type.startswith(("multipart/form-data", "application/x-www-form")):
        given["body"] = [key for key, _ in (await request.form()).multi_items()]
    errors = [
        _repeated(where, field.alias, keys.count(field.alias))
        for where, fields in (("query", route.dependant.query_params), ("body", route.dependant.body_params))
        if (keys := given.get(where)) is not None
        for field in fields
        if keys.count(field.alias) > 1 and not _is_sequence(field.field_info.annotation)
    ]
    if errors:
        raise RequestValidationError(errors)


def _repeated(where: str, name: str, count: int) -> dict[str, Any]:
    """The validation error of a single-valued field or header given ``count`` times."""
    return {"loc": (where, name), "msg": f"given {count} times; send it once", "type": "repeated_field", "input": None}


def _too_late() -> DeadlineExceeded:
    return DeadlineExceeded("the request's deadline passed while rendering its answer; the answer was dropped")


class RenderSlots:
    """At most ``slots`` renderings run at once (threads); a request waits for a slot and for
    its rendering only until its deadline. A slot is freed when its thread ends: the encodings
    whose cost grows with the mask's shape (polygons, instances) stop at the deadline
    (``app.masks.render_until``); the others are linear in the pixels, which decoding bounds.
    When the last rendering ends, the memory it freed goes back to the OS (``core.memory.trim_heap``)."""

    def __init__(self, slots: int) -> None:
        self._slots = asyncio.Semaphore(slots)
        self._running = 0

    async def run(self, function: Callable[[], T], deadline: float) -> T:
        """``function()`` in a thread, or ``DeadlineExceeded`` once ``deadline`` passes (then no
        rendering starts, and one already running is no longer waited for)."""
        try:
            async with asyncio.timeout(max(0.0, deadline - time.time())):
                await self._slots.acquire()
        except TimeoutError:
            raise _too_late() from None
        if time.time() >= deadline:
            self._slots.release()
            raise _too_late()
        self._running += 1
        future = asyncio.get_running_loop().run_in_executor(None, render_until, deadline, function)
        future.add_done_callback(self._release)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.time())):
                return await asyncio.shield(future)
        except TimeoutError:
            raise _too_late() from None

    def _release(self, future: asyncio.Future[Any]) -> None:
        self._slots.release()
        self._running -= 1
        if self._running == 0:  # idle: no rendering holds memory now
            asyncio.get_running_loop().run_in_executor(None, trim_heap)
        if not future.cancelled():
            future.exception()  # retrieved: an abandoned rendering's failure is not logged as unhandled


def get_render_slots(request: Request) -> RenderSlots:
    """The app's rendering slots (``INSID3_RENDER_CONCURRENCY``)."""
    return request.app.state.render_slots


RenderDep = Annotated[RenderSlots, Depends(get_render_slots)]
