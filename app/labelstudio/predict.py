"""``/predict``: each task's masks (one per label, k-shot from that label's examples) and keypoints,
as Label Studio results."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from functools import partial

from PIL import Image

from app.dependencies import RenderSlots
from app.labelstudio.brush import mask_to_rle
from app.labelstudio.config import Control, LabelConfig, parse_label_config
from app.labelstudio.examples import Example, by_label, model_version, project_examples
from app.labelstudio.regions import read_regions
from app.labelstudio.remote import LabelStudio
from app.masks import mask_png, mask_polygons
from app.settings import Settings
from core.errors import Insid3Error, InvalidImageError, InvalidInputError
from core.serving import InferenceBackend, StoredReference
from core.types import SegmentationResult

EXIF_ORIENTATION = 0x0112
KEYPOINT_SIZE = 1.0  # the ``width`` of a predicted keypoint, in % of the image width


def project_id(value: object) -> str:
    """The project number of Label Studio's ``"<id>.<created timestamp>"``."""
    project = str(value or "").split(".", 1)[0]
    if not project.isdigit():
        raise InvalidInputError(f"'project' must be Label Studio's '<id>.<timestamp>', got {value!r}")
    return project


@dataclass
class Job:
    """What every task of one ``/predict`` call shares."""

    backend: InferenceBackend
    settings: Settings
    tenant: str
    config: LabelConfig
    studio: LabelStudio
    examples: list[Example]
    context: dict
    deadline: float
    slots: asyncio.Semaphore  # tasks in flight
    render: RenderSlots  # CPU work (masks decoded and encoded) in threads, bounded like every rendering


def _mask_results(control: Control, to_name: str, label: str, result: SegmentationResult) -> list[dict]:
    height, width = result.mask.shape
    common = {"from_name": control.name, "to_name": to_name, "original_width": width, "original_height": height,
              "image_rotation": 0, "score": result.score, "readonly": False}
    if control.result_type == "brushlabels":
        value = {"format": "rle", "rle": mask_to_rle(result.mask), "brushlabels": [label]}
        return [{**common, "type": "brushlabels", "value": value}]
    return [
        {**common, "type": "polygonlabels", "value": {
            "points": [[polygon[i] * 100 / width, polygon[i + 1] * 100 / height] for i in range(0, len(polygon), 2)],
            "polygonlabels": [label]}}
        for polygon in mask_polygons(result.mask)
    ]


def _drawn_masks(context: dict, max_pixels: int) -> dict[str, bytes]:
    """The PNG mask of each label drawn in an interactive request's ``context``."""
    regions = read_regions(context.get("result"), max_pixels)
    return {label: mask_png(mask) for label, mask in regions.masks.items()}


async def _inline_examples(job: Job, image: bytes) -> dict[str, list[StoredReference]]:
    """Regions drawn in the ``context`` of an interactive request, as references of that image."""
    drawn = await job.render.run(partial(_drawn_masks, job.context, job.settings.max_pixels), job.deadline)
    references: dict[str, list[StoredReference]] = {}
    for label, mask in drawn.items():
        record, _ = await job.backend.create_reference(image, mask, None, job.settings.inline_reference_ttl_s,
                                                       job.deadline, owner=job.tenant)
        references[label] = [record]
    return references


def _oriented_size(image: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image as the engine sees it (EXIF rotation applied)."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            width, height = opened.size
            return (height, width) if opened.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8) else (width, height)
    except (OSError, ValueError, SyntaxError) as exc:  # what Pillow raises for unreadable headers
        raise InvalidImageError(f"the task image cannot be read: {exc}") from None


async def _keypoint_results(job: Job, image: bytes) -> list[dict]:
    """The points of the newest keypoint example matched onto the image."""
    control = job.config.keypoints
    source = next((example for example in reversed(job.examples) if example.points), None)
    if control is None or source is None:
        return []
    points = [point for point in source.points if point[2] in control.labels]
    if not points:
        return []
    matched = await job.backend.match(image, source.record, [(x, y) for x, y, _ in points], True, job.deadline)
    width, height = _oriented_size(image)
    return [
        {"from_name": control.name, "to_name": job.config.image_name, "type": "keypointlabels",
         "original_width": width, "original_height": height, "image_rotation": 0, "score": confidence,
         "readonly": False,
         "value": {"x": x * 100 / width, "y": y * 100 / height, "width": KEYPOINT_SIZE, "keypointlabels": [label]}}
        for (x, y), confidence, (_, _, label) in zip(matched.points.tolist(), matched.confidence.tolist(), points,
                                                      strict=True)
    ]


async def predict_task(job: Job, task: dict) -> dict:
    """One task's prediction: ``{"result": [...], "score", "model_version"}``."""
    async with job.slots:
        if not isinstance(task, dict):
            raise InvalidInputError("every task must be an object with 'data'")
        data = task.get("data")
        image = await job.studio.image(data.get(job.config.image_key) if isinstance(data, dict) else None)
        examples = by_label(job.examples)
        interactive = await _inline_examples(job, image) if job.context else {}
        results: list[dict] = []
        for control, label in job.config.mask_labels:
            if interactive and label not in interactive:
                continue  # an interactive request predicts the labels drawn
            references = [*interactive.get(label, []), *examples.get(label, [])]
            if not references:
                continue
            [segmented] = await job.backend.segment([image], references, None, None, job.deadline)
            if segmented.area:
                results += await job.render.run(partial(_mask_results, control, job.config.image_name, label,
                                                        segmented), job.deadline)
        if not interactive:
            results += await _keypoint_results(job, image)
    scores = [result["score"] for result in results]
    return {"result": results, "score": sum(scores) / len(scores) if scores else 0.0,
            "model_version": model_version(job.examples)}


def _answer(task: object, outcome: dict | BaseException) -> dict:
    """A task's prediction, or its error: an entry without ``result``, which Label Studio logs and skips."""
    if isinstance(outcome, Insid3Error):
        return {"task": task.get("id") if isinstance(task, dict) else None, "error": outcome.code,
                "detail": outcome.detail}
    assert isinstance(outcome, dict)
    return outcome


async def predict(backend: InferenceBackend, settings: Settings, render: RenderSlots, tenant: str,
                  body: dict) -> dict:
    """Every task's prediction, computed concurrently (the backend batches them). One task's failure
    is its own entry; when every task fails, the first error is raised."""
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise InvalidInputError("'tasks' must be a non-empty list of Label Studio tasks")
    config = parse_label_config(body.get("label_config"))
    examples = await project_examples(backend, tenant, project_id(body.get("project")))
    params = body.get("params")
    context = params.get("context") if isinstance(params, dict) else None
    slots = asyncio.Semaphore(max(1, min(2 * settings.max_batch, settings.max_queue)))
    async with LabelStudio(settings.label_studio_url, settings.label_studio_token, settings.max_upload_bytes) as studio:
        job = Job(backend, settings, tenant, config, studio, examples, context if isinstance(context, dict) else {},
                  time.time() + settings.request_timeout_s, slots, render)
        outcomes = await asyncio.gather(*(predict_task(job, task) for task in tasks), return_exceptions=True)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    unexpected = next((failure for failure in failures if not isinstance(failure, Insid3Error)), None)
    if unexpected is not None:
        raise unexpected
    if len(failures) == len(outcomes):
        raise failures[0]
    return {"results": [_answer(task, outcome) for task, outcome in zip(tasks, outcomes, strict=True)],
            "model_version": model_version(examples)}
