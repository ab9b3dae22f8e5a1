"""Image and mask decoding: every input kind, every mode, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import images
from core.errors import EmptyMaskError, ImageShapeError, ImageTooLargeError, InvalidImageError, MaskShapeError
from core.images import (
    MAX_JPEG_SCANS,
    check_mask,
    jpeg_scans,
    load_image,
    load_mask,
    mask_to_tensor,
    pixels_to_tensor,
    resize_square,
)
from tests.support.images import encode, scan_bomb, thin_png


def test_paths_bytes_pil_and_arrays_decode_to_the_same_rgb(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    (tmp_path / "a.png").write_bytes(encode(image))
    for source in (tmp_path / "a.png", str(tmp_path / "a.png"), encode(image), image, array):
        decoded = load_image(source)
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), array)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK"])
def test_every_common_mode_becomes_rgb(mode: str) -> None:
    base = Image.fromarray(np.full((8, 12, 3), 200, dtype=np.uint8))
    image = base.convert("L").convert(mode) if mode == "I;16" else base.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = load_image(encode(image, fmt) if mode != "I;16" else image)
    assert decoded.mode == "RGB" and decoded.size == (12, 8)


def test_sixteen_bit_images_are_scaled_not_clipped() -> None:
    deep = np.full((4, 4), 65535, dtype=np.uint16)
    assert np.asarray(load_image(deep)).min() == 255
    assert np.asarray(load_image(Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16)))).max() == 128


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    decoded = load_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)


def test_not_an_image_and_truncated_images_are_invalid() -> None:
    with pytest.raises(InvalidImageError, match="not an image"):
        load_image(b"hello world")
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(b"")
    whole = encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(InvalidImageError):
        load_image(whole[: len(whole) // 2])


def test_pixel_limit_and_decompression_bombs_are_refused() -> None:
    big = encode(Image.new("L", (3000, 3000)))
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        load_image(big, max_pixels=1_000_000)
    assert load_image(big, max_pixels=10_000_000).size == (3000, 3000)


def test_a_scan_bomb_is_refused_from_its_markers_before_decoding(tmp_path: Path) -> None:
    bomb = scan_bomb()
    assert jpeg_scans(bomb) > 100_000  # decoding it would take minutes
    (tmp_path / "bomb.jpg").write_bytes(bomb)
    for source in (bomb, tmp_path / "bomb.jpg"):
        with pytest.raises(ImageTooLargeError, match=f"over the limit of {MAX_JPEG_SCANS} scans"):
            load_image(source)
    with pytest.raises(ImageTooLargeError, match="scans"):
        load_mask(bomb)


def test_ordinary_jpegs_count_their_scans_and_decode() -> None:
    pixels = np.random.default_rng(3).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    progressive = encode(pixels, "JPEG", progressive=True)
    exif = Image.Exif()
    exif[0x0112] = 1
    assert jpeg_scans(progressive) == 10
    assert jpeg_scans(encode(pixels, "JPEG", exif=exif.tobytes())) == 1
    assert load_image(progressive).size == (128, 96)


def test_large_images_allow_fewer_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = np.random.default_rng(4).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    monkeypatch.setattr(images, "MAX_JPEG_SCAN_PIXELS", 9 * 96 * 128)  # 9 passes over this image
    with pytest.raises(ImageTooLargeError, match="JPEG of 10 scans, over the limit of 9 scans for its 12288 pixels"):
        load_image(encode(pixels, "JPEG", progressive=True))
    assert load_image(encode(pixels, "JPEG")).size == (128, 96)


def test_sides_and_aspect_ratios_are_limited_from_the_header() -> None:
    with pytest.raises(ImageTooLargeError, match="over the limit of 32768 pixels per side"):
        load_image(thin_png())  # 64,000,000x1: 187 KB, within max_pixels
    with pytest.raises(ImageShapeError, match="aspect ratio over the limit of 100:1"):
        load_image(encode(Image.new("L", (3000, 20))))
    assert load_image(encode(Image.new("L", (2000, 20)))).size == (2000, 20)


def test_masks_any_nonzero_value_is_foreground() -> None:
    mask = np.zeros((4, 4, 3), dtype=np.uint8)
    mask[1, 2, 1] = 7
    decoded = load_mask(encode(Image.fromarray(mask)))
    assert decoded.dtype == bool and decoded.sum() == 1 and decoded[1, 2]
    palette = Image.fromarray(np.array([[0, 3], [0, 0]], dtype=np.uint8), mode="P")
    assert load_mask(encode(palette)).sum() == 1


def test_empty_masks_and_aspect_mismatches_are_rejected() -> None:
    with pytest.raises(EmptyMaskError):
        check_mask(np.zeros((10, 20), bool), (10, 20))
    with pytest.raises(MaskShapeError, match="aspect"):
        check_mask(np.ones((20, 10), bool), (10, 20))
    check_mask(np.ones((5, 10), bool), (10, 20))  # same aspect, other resolution: fine


def test_preprocessing_matches_torchvision_resize_and_normalize() -> None:
    from torchvision import transforms

    image = Image.fromarray(np.random.default_rng(2).integers(0, 255, (37, 53, 3), dtype=np.uint8))
    reference = transforms.Compose([
        transforms.Resize((64, 64)), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])(image)
    assert torch.allclose(pixels_to_tensor(resize_square(image, 64)), reference, atol=1e-6)


def test_mask_resize_is_torch_nearest() -> None:
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    resized = mask_to_tensor(mask, 6)
    assert resized.sum() == 4 and resized[2:4, 2:4].all()

