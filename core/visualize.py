"""Pictures of results: the reference with its mask beside the target with its prediction, and
matches drawn as lines between the two images (as in the official visualisation)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

REFERENCE_COLOUR = (30, 144, 255)
PREDICTION_COLOUR = (255, 64, 64)
ALPHA = 0.5
PANEL_HEIGHT = 512
GAP = 8


def blend_mask(image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    """``image`` with ``mask`` tinted in ``colour`` and its boundary drawn opaque."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    mask = _fit(mask, image.size)
    tint = np.array(colour, dtype=np.float32)
    pixels[mask] = pixels[mask] * (1 - ALPHA) + tint * ALPHA
    edge = mask & ~_erode(mask)
    pixels[edge] = tint
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == (size[1], size[0]):
        return mask.astype(bool)
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, mode="edge")
    return (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])


def _scaled(image: Image.Image) -> tuple[Image.Image, float]:
    scale = PANEL_HEIGHT / image.height
    return image.resize((max(1, round(image.width * scale)), PANEL_HEIGHT), Image.BILINEAR), scale


def side_by_side(left: Image.Image, right: Image.Image) -> tuple[Image.Image, float, float, int]:
    """Both images at the same height on one canvas; returns it, both scales and the right offset."""
    left_scaled, left_scale = _scaled(left)
    right_scaled, right_scale = _scaled(right)
    canvas = Image.new("RGB", (left_scaled.width + GAP + right_scaled.width, PANEL_HEIGHT), "white")
    canvas.paste(left_scaled, (0, 0))
    offset = left_scaled.width + GAP
    canvas.paste(right_scaled, (offset, 0))
    return canvas, left_scale, right_scale, offset


def segmentation_overlay(reference: Image.Image, reference_mask: np.ndarray | None,
                         target: Image.Image, prediction: np.ndarray) -> Image.Image:
    """Reference (with its mask, if given) beside the target with the predicted mask."""
    left = reference if reference_mask is None else blend_mask(reference, reference_mask, REFERENCE_COLOUR)
    canvas, *_ = side_by_side(left, blend_mask(target, prediction, PREDICTION_COLOUR))
    return canvas


def prediction_overlay(target: Image.Image, prediction: np.ndarray) -> Image.Image:
    """The target alone with its predicted mask."""
    return blend_mask(target, prediction, PREDICTION_COLOUR)


def match_overlay(reference: Image.Image, reference_points: np.ndarray,
                  target: Image.Image, target_points: np.ndarray) -> Image.Image:
    """Reference and target side by side, each match a line between its two points."""
    canvas, left_scale, right_scale, offset = side_by_side(reference, target)
    draw = ImageDraw.Draw(canvas)
    for index, ((x0, y0), (x1, y1)) in enumerate(zip(reference_points, target_points, strict=True)):
        colour = _palette(index)
        start = (x0 * left_scale, y0 * left_scale)
        end = (offset + x1 * right_scale, y1 * right_scale)
        draw.line([start, end], fill=colour, width=2)
        for x, y in (start, end):
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour, outline="white")
    return canvas


def _palette(index: int) -> tuple[int, int, int]:
    hue = (index * 0.61803398875) % 1.0
    sector, fraction = divmod(hue * 6, 1)
    rising, falling = int(255 * fraction), int(255 * (1 - fraction))
    return [(255, rising, 0), (falling, 255, 0), (0, 255, rising),
            (0, falling, 255), (rising, 0, 255), (255, 0, falling)][int(sector)]
