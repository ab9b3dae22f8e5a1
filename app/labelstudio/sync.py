"""Annotation events (Label Studio webhooks) turned into examples, one event at a time.

Label Studio waits one second for a webhook (``WEBHOOK_TIMEOUT``), less than encoding takes, so
events are queued and answered at once; a single consumer applies them in arrival order, so
that an update or a deletion never overtakes the creation before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from app.labelstudio.config import parse_label_config
from app.labelstudio.examples import mask_name, points_name, project_examples
from app.labelstudio.regions import read_regions
from app.labelstudio.remote import LabelStudio
from app.masks import mask_png
from app.settings import Settings
from core.errors import Insid3Error
from core.serving import InferenceBackend, QueueFull, ReferenceNotFound

log = logging.getLogger("insid3.labelstudio")

CHANGED = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
DELETED = "ANNOTATIONS_DELETED"
RESYNC = "START_TRAINING"  # "Start training": the project's examples made again from all its annotations
MAX_PENDING = 1000


@dataclass(frozen=True)
class Event:
    """One webhook of a tenant: its action and payload."""

    tenant: str
    action: str
    payload: dict[str, Any]


def _uploads(results: object, project: str, annotation: int, max_pixels: int) -> list[tuple[bytes | None, str]]:
    """The (PNG mask or None, reference name) of each example an annotation's results make."""
    regions = read_regions(results, max_pixels)
    uploads: list[tuple[bytes | None, str]] = [
        (mask_png(mask), mask_name(project, annotation, label)) for label, mask in regions.masks.items()
    ]
    if regions.points:
        uploads.append((None, points_name(project, annotation, regions.points)))
    return uploads


class ExampleSync:
    """The queue of annotation events and its one consumer (started on the first event)."""

    def __init__(self, backend: InferenceBackend, settings: Settings) -> None:
        self._backend = backend
        self._settings = settings
        self._queue: asyncio.Queue[Event] = asyncio.Queue(MAX_PENDING)
        self._consumer: asyncio.Task[None] | None = None

    def submit(self, event: Event) -> None:
        """Queue an event (``QueueFull`` when ``MAX_PENDING`` wait already)."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            raise QueueFull(self._settings.retry_after_s, "too many annotation events waiting") from None
        if self._consumer is None or self._consumer.done():
            self._consumer = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self.apply(event)
            except Insid3Error as exc:
                log.warning("Label Studio %s not applied: %s", event.action, exc.detail)
            except Exception:
                log.exception("Label Studio %s not applied", event.action)
            finally:
                self._queue.task_done()

    async def apply(self, event: Event) -> None:
        project = str((event.payload.get("project") or {}).get("id", ""))
        if event.action == RESYNC:
            await self._resync(event.tenant, project, event.payload)
            return
        if event.action == DELETED:
            for annotation in event.payload.get("annotations") or []:
                await self._replace(event.tenant, project, int(annotation["id"]), set())
            return
        annotation = event.payload.get("annotation") or {}
        if annotation.get("was_cancelled"):
            await self._replace(event.tenant, project, int(annotation["id"]), set())
            return
        created = await self._examples_of(event.tenant, project, annotation, event.payload)
        await self._replace(event.tenant, project, int(annotation["id"]), created)

    async def _examples_of(self, tenant: str, project: str, annotation: dict, payload: dict) -> set[str]:
        """Store the annotation's examples; their reference ids."""
        config = parse_label_config((payload.get("project") or {}).get("label_config"))
        number = int(annotation["id"])
        uploads = await asyncio.to_thread(_uploads, annotation.get("result"), project, number,
                                          self._settings.max_pixels)
        if not uploads:
            return set()
        deadline = time.time() + self._settings.request_timeout_s
        async with LabelStudio(self._settings.label_studio_url, self._settings.label_studio_token,
                               self._settings.max_upload_bytes) as studio:
            image = await studio.image(((payload.get("task") or {}).get("data") or {}).get(config.image_key))
        records = await asyncio.gather(*(
            self._backend.create_reference(image, mask, name, 0.0, deadline, owner=tenant) for mask, name in uploads
        ))
        return {record.reference_id for record, _ in records}

    async def _resync(self, tenant: str, project: str, payload: dict) -> None:
        """Every annotation of the project's tasks (``payload["tasks"]``, else read from Label Studio)
        made an example again; examples of annotations that no longer exist are deleted."""
        tasks = payload.get("tasks")
        if not isinstance(tasks, list):
            async with LabelStudio(self._settings.label_studio_url, self._settings.label_studio_token,
                                   self._settings.max_upload_bytes) as studio:
                tasks = await studio.annotated_tasks(project)
        keep: set[str] = set()
        for task in tasks:
            for annotation in task.get("annotations") or []:
                if not annotation.get("was_cancelled"):
                    keep |= await self._examples_of(tenant, project, annotation, {**payload, "task": task})
        for example in await project_examples(self._backend, tenant, project):
            if example.reference_id not in keep:
                with contextlib.suppress(ReferenceNotFound):
                    await self._backend.delete_reference(example.reference_id, scope=tenant)
        log.info("Label Studio project %s resynchronised: %d examples", project, len(keep))

    async def _replace(self, tenant: str, project: str, annotation: int, keep: set[str]) -> None:
        """Forget the annotation's examples other than ``keep``."""
        for example in await project_examples(self._backend, tenant, project):
            if example.annotation == annotation and example.reference_id not in keep:
                with contextlib.suppress(ReferenceNotFound):
                    await self._backend.delete_reference(example.reference_id, scope=tenant)
