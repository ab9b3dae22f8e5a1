"""Label Studio's brush RLE (app/labelstudio/brush.py): byte for byte what label_studio_sdk encodes,
and decoded back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from app.labelstudio.brush import BrushDecodeError, decode_rle, encode_rle, mask_to_rle, rle_to_mask

# Encoded by label_studio_sdk 2.1.2 (converter.brush.mask2rle / encode_rle) from the inputs below.
SDK_MASK_RLE = [0, 0, 0, 140, 57, 27, 254, 35, 0, 191, 255, 108, 2, 255, 253, 176, 11, 255, 241, 128, 71, 255,
                133, 192, 0]
SDK_VALUES_RLE = [0, 0, 0, 24, 57, 27, 252, 64, 96, 3, 128, 3, 8, 16, 1, 49, 1, 128, 14, 0, 12, 32, 64, 4, 196,
                  6, 0, 56, 0, 48, 129, 0, 18]
SDK_BIG_HEAD = [0, 5, 126, 64, 57, 27, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 212, 191, 255]


def small_mask() -> np.ndarray:
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:4, 2:6] = True
    mask[4, 0] = True
    return mask


def test_the_encoding_is_label_studios_byte_for_byte() -> None:
    assert mask_to_rle(small_mask()) == SDK_MASK_RLE
    assert encode_rle(np.array([3, 3, 3, 7, 1, 2, 2, 9] * 3)) == SDK_VALUES_RLE
    big = np.zeros((300, 300), dtype=bool)
    big[:200] = True  # a run of 240 000 values: split into pieces of 65 536
    encoded = mask_to_rle(big)
    assert (len(encoded), encoded[:20]) == (27, SDK_BIG_HEAD)


@pytest.mark.parametrize("seed", range(4))
def test_masks_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 300, 2)
    mask = rng.random((height, width)) < rng.random()  # noise: runs of every length, literal blocks too
    mask[: height // 2, : width // 2] = seed % 2 == 0
    assert np.array_equal(rle_to_mask(mask_to_rle(mask), int(width), int(height)), mask)


def test_any_values_round_trip_including_literal_blocks() -> None:
    values = np.random.default_rng(0).integers(0, 256, 5000)
    values[1000:80000 % 5000] = 7
    assert np.array_equal(decode_rle(encode_rle(values), 10_000), values)


def test_the_region_is_the_alpha_channel() -> None:
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 1] = (255, 0, 0, 200)
    rgba[1, 2] = (255, 255, 255, 20)  # barely painted: under half covered
    assert rle_to_mask(encode_rle(rgba.ravel()), 3, 2).tolist() == [[False, True, False], [False, False, False]]


@pytest.mark.parametrize("broken", [SDK_MASK_RLE[:10], [], [1, 2, 3], "text"])
def test_broken_rle_is_a_clear_error(broken: object) -> None:
    with pytest.raises(BrushDecodeError):
        rle_to_mask(broken, 7, 5)  # type: ignore[arg-type]


def test_a_size_that_does_not_fit_is_a_clear_error() -> None:
    with pytest.raises(BrushDecodeError, match="does not fit a 8x5"):
        rle_to_mask(SDK_MASK_RLE, 8, 5)


def test_a_huge_value_count_is_refused_before_allocating() -> None:
    header = encode_rle(np.zeros(4, dtype=np.uint8))
    header[:4] = [255, 255, 255, 255]  # 4 294 967 295 values claimed
    with pytest.raises(BrushDecodeError, match="over the limit"):
        rle_to_mask(header, 7, 5)
