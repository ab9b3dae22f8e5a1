"""Synthetic test images with a known answer: a coloured disc on random clutter."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

RED = (220, 30, 30)


@dataclass(frozen=True)
class Scene:
    """An RGB image and the boolean mask of its disc(s)."""

    image: np.ndarray
    mask: np.ndarray

    @property
    def png(self) -> bytes:
        return png_bytes(self.image)

    @property
    def mask_png(self) -> bytes:
        return png_bytes((self.mask * 255).astype(np.uint8))


def png_bytes(array: np.ndarray) -> bytes:
    """``array`` (HxW or HxWx3 uint8) encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def scene(seed: int, height: int, width: int, discs: list[tuple[int, int, int]], colour=RED) -> Scene:
    """Noise and random rectangles (the clutter), with solid discs (cy, cx, r) of ``colour`` on top."""
    rng = np.random.default_rng(seed)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    for _ in range(12):
        y0, x0 = rng.integers(0, height - 10), rng.integers(0, width - 10)
        image[y0:y0 + rng.integers(5, 25), x0:x0 + rng.integers(5, 25)] = rng.integers(0, 256, 3)
    yy, xx = np.ogrid[:height, :width]
    mask = np.zeros((height, width), dtype=bool)
    for cy, cx, r in discs:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    image[mask] = colour
    return Scene(image, mask)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks."""
    return float((a & b).sum() / max((a | b).sum(), 1))


REFERENCE = scene(1, 160, 200, [(70, 90, 35)])
REFERENCE_2 = scene(2, 150, 150, [(80, 70, 30)])
TARGET = scene(10, 150, 180, [(60, 100, 30)])
TARGET_2 = scene(11, 140, 170, [(80, 60, 28)])
TWO_DISCS = scene(12, 160, 240, [(60, 60, 28), (90, 170, 30)])
