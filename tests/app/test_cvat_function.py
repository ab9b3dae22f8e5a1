"""The CVAT auto-annotation function (insid3/cvat.py) against a real ``insid3 serve``, driven the way
cvat-sdk's driver (``cvat_sdk.auto_annotation.annotate_task``) drives it, offline: its detection
context, its label mapping and validation of the returned shapes onto a task's labels. (CVAT's
server itself only exists as Docker images here.)"""

from __future__ import annotations

import logging
import secrets

import cvat_sdk.models as models
import httpx
import numpy as np
import PIL.Image
import pytest
from cvat_sdk.auto_annotation import BadFunctionError
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
from cvat_sdk.masks import decode_mask

from insid3.cvat import create, parse_labels
from tests.support.api import create_reference, decode_rle, segment
from tests.support.images import REFERENCE, REFERENCE_2, TARGET, decode


def task_label(number: int, name: str, kind: str) -> models.Label:
    """A label as CVAT's server describes a task's label."""
    return models.Label(id=number, name=name, type=kind, attributes=[], sublabels=[])


def run_driver(function, image: bytes, task_labels: list[models.Label], conv_mask_to_poly: bool = False,
               conf_threshold: float | None = None) -> list[models.LabeledShapeRequest]:
    """What annotate_task does with one frame: detect in its context, then validate and remap the
    shapes onto the task's labels (frame 3)."""
    mapper = _AnnotationMapper(logging.getLogger("cvat-test"), function.spec.labels, task_labels,
                               allow_unmatched_labels=False, conv_mask_to_poly=conv_mask_to_poly)
    context = _DetectionFunctionContextImpl(frame_name="frame3.png", conf_threshold=conf_threshold,
                                            conv_mask_to_poly=conv_mask_to_poly)
    annotations = function.detect(context, PIL.Image.fromarray(decode(image, "RGB")))
    _, shapes = mapper.validate_and_remap(annotations, 3)
    return shapes


@pytest.fixture(scope="module")
def disc_label(server) -> tuple[str, list[str]]:
    """Two references of the service named by a fresh label."""
    label = f"disc-{secrets.token_hex(4)}"
    with httpx.Client(base_url=server.url, timeout=120) as http:
        ids = [create_reference(http, scene, name=label).json()["reference_id"] for scene in (REFERENCE, REFERENCE_2)]
    return label, ids


def test_named_references_label_a_frame_as_masks_equal_to_segment(server, disc_label) -> None:
    label, ids = disc_label
    function = create(server.url)  # labels: the tenant's named references
    assert label in [spec.name for spec in function.spec.labels]
    shapes = run_driver(function, TARGET.png, [task_label(41, label, "mask")]
                        + [task_label(100 + i, spec.name, "mask")
                           for i, spec in enumerate(function.spec.labels) if spec.name != label])
    [shape] = [shape for shape in shapes if shape.label_id == 41]
    assert (str(shape.type), shape.frame) == ("mask", 3)
    height, width = TARGET.mask.shape
    mask = decode_mask(shape.points, image_width=width, image_height=height)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        expected = decode_rle(segment(http, [TARGET], {"reference_ids": ",".join(ids)}).json()["results"][0]["rle"])
    assert np.array_equal(mask, expected)


def test_explicit_labels_and_polygons_when_cvat_asks_for_them(server, disc_label) -> None:
    ids = disc_label[1]
    function = create(server.url, labels=f"thing={','.join(ids)}")
    shapes = run_driver(function, TARGET.png, [task_label(7, "thing", "polygon")],
                        conv_mask_to_poly=True)
    assert shapes and {(str(shape.type), shape.label_id) for shape in shapes} == {("polygon", 7)}


def test_a_confidence_threshold_above_every_score_drops_the_mask(server, disc_label) -> None:
    function = create(server.url, labels=f"thing={disc_label[1][0]}")
    assert run_driver(function, TARGET.png, [task_label(7, "thing", "mask")], conf_threshold=1.0) == []


def test_the_driver_refuses_a_task_label_of_another_type(server, disc_label) -> None:
    function = create(server.url, labels=f"thing={disc_label[1][0]}")
    with pytest.raises(BadFunctionError):
        run_driver(function, TARGET.png, [task_label(7, "thing", "rectangle")])


@pytest.mark.parametrize("text", ["cat", "cat=", "=a", "cat=a;dog"])
def test_malformed_labels_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="LABEL=ID"):
        parse_labels(text)
    assert parse_labels("cat=a, b;dog=c") == {"cat": ["a", "b"], "dog": ["c"]}
