"""A CVAT auto-annotation function (``cvat_sdk.auto_annotation``): masks from the service's references.

    cvat-cli --server-host CVAT task auto-annotate TASK_ID --function-module insid3.cvat \\
        -p url=str:http://insid3:8000 -p api_key=str:KEY [-p labels=str:"cat=ID1,ID2;dog=ID3"]

Each label of the spec is segmented k-shot from its references through ``POST /segment`` (with
``insid3.client``: one call per label and image) and returned as a CVAT mask shape, or as polygons
when CVAT asks for ``conv_mask_to_poly``. Without ``labels``, every reference of the key's tenant
that has a name and a mask is used, grouped by name: the name is the label.
"""

from __future__ import annotations

from collections.abc import Sequence

import cvat_sdk.auto_annotation as cvataa
import PIL.Image
from cvat_sdk.masks import encode_mask

from app.masks import mask_polygons
from insid3.client import Client


def parse_labels(text: str) -> dict[str, list[str]]:
    """``"cat=ID1,ID2;dog=ID3"`` as {label: [reference ids]}."""
    labels: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, ids = item.partition("=")
        references = [value.strip() for value in ids.split(",") if value.strip()]
        if not sep or not name.strip() or not references:
            raise ValueError(f"labels: expected 'LABEL=ID[,ID...]' items separated by ';', got {item!r}")
        labels.setdefault(name.strip(), []).extend(references)
    return labels


def named_references(client: Client) -> dict[str, list[str]]:
    """Every named reference with a mask of the caller's tenant, grouped by name."""
    labels: dict[str, list[str]] = {}
    for reference in client.list_references():
        if reference.name and reference.mask_area:
            labels.setdefault(reference.name, []).append(reference.reference_id)
    return labels


class Insid3Function:
    """A detection function whose labels are the given references' labels."""

    def __init__(self, client: Client, labels: dict[str, list[str]]) -> None:
        if not labels:
            raise ValueError("no labels: give labels=LABEL=ID,... or store named references first")
        self._client = client
        self._references = list(labels.values())
        self.spec = cvataa.DetectionFunctionSpec(
            labels=[cvataa.label_spec(name, number, type="mask") for number, name in enumerate(labels)]
        )

    def detect(self, context: cvataa.DetectionFunctionContext,
               image: PIL.Image.Image) -> Sequence[cvataa.DetectionAnnotation]:
        """One mask (or its polygons) per label found in ``image``."""
        image = image.convert("RGB")
        shapes: list[cvataa.DetectionAnnotation] = []
        for label, reference_ids in enumerate(self._references):
            [result] = self._client.segment(image, reference_ids)
            if not result.area or (context.conf_threshold is not None and result.score < context.conf_threshold):
                continue
            if context.conv_mask_to_poly:
                shapes += [cvataa.polygon(label, polygon) for polygon in mask_polygons(result.mask)]
            else:
                shapes.append(cvataa.mask(label, encode_mask(result.mask)))
        return shapes


def create(url: str, api_key: str = "", labels: str = "") -> Insid3Function:
    """The function for ``cvat-cli ... --function-module insid3.cvat -p url=str:... -p api_key=str:...``."""
    client = Client(url, api_key=api_key or None)
    return Insid3Function(client, parse_labels(labels) if labels else named_references(client))
