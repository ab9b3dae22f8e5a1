"""Pictures of results: the reference with its mask beside the target with its prediction, and
matches drawn as lines between the two images (as in the official visualisation)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

REFERENCE_COLOUR = (30, 144, 255)
PREDICTION_COLOUR = (255, 64, 64)
ALPHA = 0.5
PANEL_HEIGHT = 512
GAP = 8
OUTLINE_PER_PIXELS = 256  # the outline is 1 px wide per 256 px of the image's short side (at least 1)
BAND_ROWS = 256  # rows tinted at a time: the only temporaries are a band's


def blend_mask(image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int], alpha: float = ALPHA) -> Image.Image:
    """``image`` with ``mask`` tinted in ``colour`` and its boundary drawn opaque (the one overlay
    renderer: the CLI's pictures and the API's ``format=overlay``).

    All in uint8: one RGB copy of the image to draw into, the mask fitted to it (nearest) when
    their sizes differ, and the blend done a band of rows at a time.
    """
    pixels = np.array(image if image.mode == "RGB" else image.convert("RGB"))
    mask = fit_mask(mask, image.size)
    edge = mask & ~_erode(mask, max(1, min(mask.shape) // OUTLINE_PER_PIXELS))
    weight = round(alpha * 256)
    tint = np.array(colour, dtype=np.uint16) * weight
    for top in range(0, pixels.shape[0], BAND_ROWS):
        band, inside = pixels[top:top + BAND_ROWS], mask[top:top + BAND_ROWS]
        band[inside] = ((band[inside].astype(np.uint16) * (256 - weight) + tint) >> 8).astype(np.uint8)
        band[edge[top:top + BAND_ROWS]] = colour
    return Image.fromarray(pixels)


def fit_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` as a (height, width) bool array for an image of ``size`` (width, height), nearest."""
    mask = np.asarray(mask, dtype=bool)
    width, height = size
    if mask.shape == (height, width):
        return mask
    rows = ((np.arange(height) + 0.5) * (mask.shape[0] / height)).astype(np.intp)
    cols = ((np.arange(width) + 0.5) * (mask.shape[1] / width)).astype(np.intp)
    return mask[np.ix_(rows, cols)]


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` eroded by a (2 radius + 1)² square; the image border does not erode it."""
    return ndimage.minimum_filter(mask.view(np.uint8), size=2 * radius + 1, mode="nearest").view(bool)


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
