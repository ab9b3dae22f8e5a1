"""Mask encodings returned by the API: COCO RLE, polygons, PNG, overlays, instances."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask
from scipy import ndimage

from core.serving import DeadlineExceeded
from core.visualize import blend_mask

T = TypeVar("T")
OVERLAY_COLOUR = (0, 170, 255)
TRACE_STEPS_PER_CHECK = 1 << 16  # outline steps (Python) between two deadline checks
_deadline: ContextVar[float] = ContextVar("insid3_render_deadline", default=math.inf)

# Moving along pixel edges on the corner lattice, with the region on the right-hand side.
# direction -> (dx, dy), and the (row, col) offsets of the cells right and left of the next edge.
_STEP = {0: (1, 0), 1: (0, 1), 2: (-1, 0), 3: (0, -1)}  # east, south, west, north (y down)
_RIGHT_CELL = {0: (0, 0), 1: (0, -1), 2: (-1, -1), 3: (-1, 0)}
_LEFT_CELL = {0: (-1, 0), 1: (0, 0), 2: (0, -1), 3: (-1, -1)}


def render_until(deadline: float, function: Callable[[], T]) -> T:
    """``function()``, whose encodings stop with ``DeadlineExceeded`` once ``deadline`` passes
    (checked between components, instances and every ``TRACE_STEPS_PER_CHECK`` outline steps)."""
    token = _deadline.set(deadline)
    try:
        return function()
    finally:
        _deadline.reset(token)


def check_deadline() -> None:
    """``DeadlineExceeded`` when the deadline of the rendering running here has passed."""
    if time.time() >= _deadline.get():
        raise DeadlineExceeded("the request's deadline passed while rendering its answer; the rendering stopped")


def encode_rle(mask: np.ndarray) -> dict[str, object]:
    """COCO compressed RLE ``{"size": [h, w], "counts": str}``, decodable by pycocotools."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=bool).view(np.uint8)))  # one copy
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _trace_outline(component: np.ndarray) -> list[float]:
    """Outer boundary of one 4-connected component along pixel edges, as COCO [x1, y1, ...]."""
    padded = np.pad(component, 1)
    rows, cols = np.nonzero(padded)
    start_row, start_col = int(rows[0]), int(cols[0])  # top-most, then left-most pixel
    x, y, direction = start_col, start_row, 0  # its top edge, walking east
    points: list[float] = []
    steps = 0
    while True:
        steps += 1
        if steps % TRACE_STEPS_PER_CHECK == 0:
            check_deadline()
        for turn in (1, 0, 3, 2):  # right, straight, left, back
            candidate = (direction + turn) % 4
            right_r, right_c = _RIGHT_CELL[candidate]
            left_r, left_c = _LEFT_CELL[candidate]
            if padded[y + right_r, x + right_c] and not padded[y + left_r, x + left_c]:
                break
        if candidate != direction or not points:
            points.extend((float(x - 1), float(y - 1)))
        direction = candidate
        dx, dy = _STEP[direction]
        x, y = x + dx, y + dy
        if (x, y) == (start_col, start_row):
            return points


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """One polygon per 4-connected component (its outer boundary, corners in pixel coordinates;
    holes are not represented: use RLE for exact masks)."""
    labels, _ = ndimage.label(mask)
    polygons = []
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None:
            continue
        check_deadline()
        component = labels[window] == index
        outline = _trace_outline(component)
        dy, dx = window[0].start, window[1].start
        polygons.append([value + (dx if i % 2 == 0 else dy) for i, value in enumerate(outline)])
    return polygons


def split_instances(mask: np.ndarray) -> Iterator[np.ndarray]:
    """The 8-connected components of ``mask``, largest first, one full-size mask at a time."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    windows = ndimage.find_objects(labels)
    for index in np.argsort(-areas, kind="stable"):
        check_deadline()
        part = np.zeros(mask.shape, dtype=bool)
        window = windows[index]
        part[window] = labels[window] == index + 1
        yield part


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """The mask as an 8-bit grayscale PNG (0 background, 255 foreground)."""
    return _png(Image.fromarray(np.asarray(mask, dtype=bool).view(np.uint8) * np.uint8(255), mode="L"))


def overlay_png(image: Image.Image, mask: np.ndarray) -> bytes:
    """The target with the mask tinted and outlined, as a PNG at the image's size."""
    return _png(blend_mask(image, mask, OVERLAY_COLOUR))
