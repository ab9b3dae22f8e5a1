"""Label Studio regions (results of an annotation, or of the ``context`` of a prediction) as
masks per label and keypoints, in pixels of the original image."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from app.labelstudio.brush import rle_to_mask
from app.labelstudio.examples import Point
from core.errors import ImageTooLargeError, InvalidInputError

MASK_TYPES = ("brushlabels", "polygonlabels", "rectanglelabels")
KEYPOINT_TYPE = "keypointlabels"


@dataclass
class Regions:
    """The union mask of each label, and the labelled keypoints, of a list of results."""

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)


def _value(result: dict) -> dict:
    value = result.get("value")
    return value if isinstance(value, dict) else {}


def _label(result: dict, kind: str) -> str | None:
    labels = _value(result).get(kind)
    return str(labels[0]) if isinstance(labels, list) and labels else None


def _size(result: dict, max_pixels: int) -> tuple[int, int]:
    width, height = result.get("original_width"), result.get("original_height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise InvalidInputError(f"a {result.get('type')} region without its original_width/original_height")
    if width * height > max_pixels:
        raise ImageTooLargeError(f"a {width}x{height} region, over {max_pixels} pixels (INSID3_MAX_PIXELS)")
    return width, height


def _polygon(points: list[tuple[float, float]], width: int, height: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    if len(points) >= 3:
        ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _corners(value: dict, width: int, height: int) -> list[tuple[float, float]]:
    """A rectangle's corners in pixels, rotated about its top-left corner as Label Studio does."""
    x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
    w, h = float(value["width"]) * width / 100, float(value["height"]) * height / 100
    angle = math.radians(float(value.get("rotation") or 0.0))
    cos, sin = math.cos(angle), math.sin(angle)
    return [(x + dx * cos - dy * sin, y + dx * sin + dy * cos) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]


def _mask(result: dict, kind: str, width: int, height: int) -> np.ndarray:
    value = _value(result)
    try:
        if kind == "brushlabels":
            return rle_to_mask(value["rle"], width, height)
        if kind == "polygonlabels":
            points = [(float(x) * width / 100, float(y) * height / 100) for x, y in value["points"]]
            return _polygon(points, width, height)
        return _polygon(_corners(value, width, height), width, height)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"a {kind} region without a usable value ({type(exc).__name__}: {exc})") from None


def _keypoint(value: dict, width: int, height: int) -> tuple[float, float]:
    """A keypoint's pixel, kept inside the image."""
    try:
        x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError("not finite")
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError("a keypointlabels region without finite numeric x and y") from None
    return min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)


def read_regions(results: object, max_pixels: int) -> Regions:
    """Brush, polygon and rectangle regions as one mask per label; keypoints as pixels. Other
    region types are ignored; a region over ``max_pixels`` is refused."""
    regions = Regions()
    for result in results if isinstance(results, list) else []:
        kind = result.get("type") if isinstance(result, dict) else None
        if kind not in (*MASK_TYPES, KEYPOINT_TYPE) or (label := _label(result, kind)) is None:
            continue
        width, height = _size(result, max_pixels)
        if kind == KEYPOINT_TYPE:
            regions.points.append((*_keypoint(_value(result), width, height), label))
            continue
        mask = _mask(result, kind, width, height)
        regions.masks[label] = regions.masks[label] | mask if label in regions.masks else mask
    regions.masks = {label: mask for label, mask in regions.masks.items() if mask.any()}
    return regions
