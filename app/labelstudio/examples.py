"""Examples: the references a Label Studio project's annotations became, found by their name.

Until references carry fields of their own, a project's examples are the tenant's references
named ``labelstudio:<project>:<annotation>:mask:<label>`` (one per label of an annotation's brush
or polygon regions) or ``labelstudio:<project>:<annotation>:points:<JSON [[x, y, label], ...]>``
(a match-only reference of the annotated image and its keypoints in pixels). This module is the
one place that knows the convention.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from core.serving import InferenceBackend, StoredReference

PREFIX = "labelstudio"
PAGE = 1000
Point = tuple[float, float, str]


@dataclass(frozen=True)
class Example:
    """One reference of a project: a label's mask, or keypoints (``points``, label ``""``)."""

    record: StoredReference
    project: str
    annotation: int
    label: str
    points: tuple[Point, ...] = ()
    created_at: float = 0.0

    @property
    def reference_id(self) -> str:
        return self.record.reference_id

    @property
    def is_mask(self) -> bool:
        return not self.points


def mask_name(project: str, annotation: int, label: str) -> str:
    return f"{PREFIX}:{project}:{annotation}:mask:{label}"


def points_name(project: str, annotation: int, points: list[Point]) -> str:
    rounded = [[round(x, 2), round(y, 2), label] for x, y, label in points]
    return f"{PREFIX}:{project}:{annotation}:points:{json.dumps(rounded, separators=(',', ':'))}"


def parse(record: StoredReference) -> Example | None:
    """The example a reference record stands for, or None (not an example, or malformed)."""
    parts = (record.name or "").split(":", 4)
    if len(parts) != 5 or parts[0] != PREFIX or not parts[2].isdigit():
        return None
    _, project, annotation, kind, payload = parts
    created = record.created_at.timestamp()
    if kind == "mask":
        return Example(record, project, int(annotation), payload, created_at=created)
    if kind != "points":
        return None
    try:
        points = tuple((float(x), float(y), str(label)) for x, y, label in json.loads(payload))
    except (ValueError, TypeError):
        return None
    return Example(record, project, int(annotation), "", points, created)


async def project_examples(backend: InferenceBackend, tenant: str, project: str) -> list[Example]:
    """Every example of ``project`` that ``tenant`` owns, oldest first."""
    examples: list[Example] = []
    offset = 0
    while True:
        page = await backend.list_references(offset, PAGE, scope=tenant)
        examples += [example for record in page.items
                     if (example := parse(record)) is not None and example.project == project]
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return sorted(examples, key=lambda example: (example.created_at, example.reference_id))


def by_label(examples: list[Example]) -> dict[str, list[StoredReference]]:
    """The references of each label's mask examples."""
    labels: dict[str, list[StoredReference]] = {}
    for example in examples:
        if example.is_mask:
            labels.setdefault(example.label, []).append(example.record)
    return labels


def model_version(examples: list[Example]) -> str:
    """A version that changes whenever the project's examples do."""
    if not examples:
        return "insid3-no-examples"
    digest = hashlib.sha256(repr(sorted((e.reference_id, e.label, e.points) for e in examples)).encode())
    return f"insid3-{len(examples)}ex-{digest.hexdigest()[:12]}"
