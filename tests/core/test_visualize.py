"""The one overlay renderer (uint8, bounded temporaries) and the one bbox."""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.types import SegmentationResult, mask_bbox
from core.visualize import blend_mask, fit_mask


def _scene(height: int = 60, width: int = 90) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), bool)
    mask[10:40, 20:70] = True
    return pixels, mask


def test_blend_is_the_float_blend_in_uint8_and_leaves_the_rest_alone() -> None:
    pixels, mask = _scene()
    drawn = np.asarray(blend_mask(Image.fromarray(pixels), mask, (0, 170, 255)))
    expected = (0.5 * pixels + 0.5 * np.array([0, 170, 255])).astype(np.uint8)
    inner = np.zeros_like(mask)
    inner[11:39, 21:69] = True
    assert np.array_equal(drawn[inner], expected[inner])
    assert np.array_equal(drawn[~mask], pixels[~mask])
    assert (drawn[mask & ~inner] == (0, 170, 255)).all()  # a 1 px outline on a 60 px high image


def test_outline_grows_with_the_image_and_the_border_is_not_outlined() -> None:
    mask = np.zeros((1024, 1024), bool)
    mask[:, :512] = True
    drawn = np.asarray(blend_mask(Image.new("RGB", (1024, 1024)), mask, (255, 0, 0)))
    outline = (drawn == (255, 0, 0)).all(axis=2)
    assert outline[:, 508:512].all() and not outline[:, :508].any() and not outline[:, 512:].any()


def test_a_full_resolution_mask_is_fitted_to_a_reduced_image() -> None:
    pixels, mask = _scene(600, 900)
    small = Image.fromarray(pixels).reduce(3)
    assert np.array_equal(fit_mask(mask, small.size), mask[1::3, 1::3])
    drawn = blend_mask(small, mask, (0, 170, 255))
    assert drawn.size == small.size and drawn.mode == "RGB"
    assert fit_mask(mask, (900, 600)) is mask


def test_one_bbox_for_results_and_masks() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        mask = rng.random((rng.integers(1, 30), rng.integers(1, 30))) < rng.random() * 0.1
        ys, xs = np.nonzero(mask)
        expected = None if ys.size == 0 else (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert mask_bbox(mask) == expected
        assert SegmentationResult(mask, 0.0).bbox == expected
