"""A CVAT auto-annotation function (``cvat_sdk.auto_annotation``): masks from the service's references.

    cvat-cli --server-host CVAT task auto-annotate TASK_ID --function-module insid3.cvat \\
        -p url=str:http://insid3:8000 -p api_key=str:KEY [-p labels=str:"cat=ID1,ID2;dog=ID3"]

Each label of the spec is segmented k-shot from its references through ``POST /segment`` (one
request per label and image) and returned as a CVAT mask shape (or polygons when CVAT asks for
``conv_mask_to_poly``). Without ``labels``, every reference of the key's tenant that has a name
is used, grouped by name: the name is the label. The service is called with httpx directly.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cvat_sdk.auto_annotation as cvataa
import httpx
import PIL.Image
from cvat_sdk.masks import encode_mask
from pycocotools import mask as coco_mask

TIMEOUT_S = 120.0


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


def named_references(http: httpx.Client) -> dict[str, list[str]]:
    """Every named reference of the caller's tenant, grouped by name."""
    labels: dict[str, list[str]] = {}
    offset = 0
    while True:
        page = http.get("/references", params={"offset": offset, "limit": 1000}).raise_for_status().json()
        for item in page["items"]:
            if item.get("name") and item.get("mask_area", 1):
                labels.setdefault(item["name"], []).append(item["reference_id"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return labels


class Insid3Function:
    """A detection function whose labels are the given references' labels."""

    def __init__(self, http: httpx.Client, labels: dict[str, list[str]]) -> None:
        if not labels:
            raise ValueError("no labels: give labels=LABEL=ID,... or store named references first")
        self._http = http
        self._references = list(labels.values())
        self.spec = cvataa.DetectionFunctionSpec(
            labels=[cvataa.label_spec(name, number, type="mask") for number, name in enumerate(labels)]
        )

    def _segment(self, image: bytes, reference_ids: list[str], polygons: bool) -> dict:
        answer = self._http.post("/segment", data={"reference_ids": ",".join(reference_ids),
                                                    "format": "polygons" if polygons else "rle"},
                                 files={"target": ("frame.png", image, "image/png")})
        if answer.status_code != 200:
            raise RuntimeError(f"INSID3 /segment answered {answer.status_code}: {answer.text[:500]}")
        return answer.json()["results"][0]

    def detect(self, context: cvataa.DetectionFunctionContext,
               image: PIL.Image.Image) -> Sequence[cvataa.DetectionAnnotation]:
        """One mask (or its polygons) per label found in ``image``."""
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        shapes: list[cvataa.DetectionAnnotation] = []
        for label, reference_ids in enumerate(self._references):
            result = self._segment(buffer.getvalue(), reference_ids, context.conv_mask_to_poly)
            if not result["area"] or (context.conf_threshold is not None and result["score"] < context.conf_threshold):
                continue
            if context.conv_mask_to_poly:
                shapes += [cvataa.polygon(label, polygon) for polygon in result["polygons"] if len(polygon) >= 6]
                continue
            rle = result["rle"]
            mask = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
            shapes.append(cvataa.mask(label, encode_mask(mask)))
        return shapes


def create(url: str, api_key: str = "", labels: str = "") -> Insid3Function:
    """The function for ``cvat-cli ... --function-module insid3.cvat -p url=str:... -p api_key=str:...``."""
    http = httpx.Client(base_url=url, headers={"X-API-Key": api_key} if api_key else {}, timeout=TIMEOUT_S)
    return Insid3Function(http, parse_labels(labels) if labels else named_references(http))

