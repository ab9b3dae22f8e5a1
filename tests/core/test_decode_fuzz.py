"""Decoding is total: every upload either decodes to RGB or is refused with a 415/413 error.

Small images in every format and mode Pillow can write, and truncated and bit-flipped copies of
them (seeded, bounded), go through ``load_image`` and ``load_mask``; nothing else may escape.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.errors import ImageShapeError, ImageTooLargeError, InvalidImageError
from core.images import ALLOWED_FORMATS, load_image, load_mask

MODES = ("RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I", "F", "CMYK", "YCbCr", "LAB")
TRUNCATIONS = 3
FLIPS = 5
REFUSED = (InvalidImageError, ImageTooLargeError, ImageShapeError)


def _samples() -> list[tuple[str, str, bytes]]:
    """(format, mode, file bytes) for every format and mode Pillow saves without error."""
    Image.init()
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (17, 23, 3), dtype=np.uint8))
    samples = []
    for fmt in sorted(Image.SAVE):
        for mode in MODES:
            image = base.convert("L").convert(mode) if mode in ("I;16", "I", "F") else base.convert(mode)
            buffer = io.BytesIO()
            try:
                image.save(buffer, format=fmt)
            except Exception:  # this plugin cannot write this mode (or needs an external handler)
                continue
            samples.append((fmt, mode, buffer.getvalue()))
    return samples


def _variants(data: bytes, rng: np.random.Generator) -> list[bytes]:
    """Truncated and bit-flipped copies of ``data``."""
    variants = [data[:cut] for cut in rng.integers(1, len(data), TRUNCATIONS)]
    for _ in range(FLIPS):
        flipped = bytearray(data)
        for position in rng.integers(0, len(data), int(rng.integers(1, 9))):
            flipped[position] ^= 1 << int(rng.integers(0, 8))
        variants.append(bytes(flipped))
    return variants


def _odd_dds() -> bytes:
    """A DDS header whose pixel format Pillow opens but cannot decode (NotImplementedError)."""
    pixel_format = struct.pack("<8I", 32, 0x80000, 0, 16, 0xF800, 0x07E0, 0x001F, 0)  # only DDPF_BUMPDUDV
    header = (struct.pack("<7I", 124, 0x1007, 16, 16, 0, 0, 0) + bytes(44) + pixel_format
              + struct.pack("<5I", 0x1000, 0, 0, 0, 0))
    return b"DDS " + header + bytes(16 * 16 * 2)


def _decode(data: bytes) -> str | None:
    """None when ``data`` decodes to an RGB image (and a mask) or is refused properly; else what went wrong."""
    try:
        image = load_image(data)
    except REFUSED:
        return None
    except Exception as exc:  # the point of the test: nothing else may escape
        return f"load_image raised {type(exc).__name__}: {exc}"
    if image.mode != "RGB":
        return f"load_image gave mode {image.mode}"
    try:
        mask = load_mask(data)
    except REFUSED:
        return "load_image accepted it but load_mask refused it"
    except Exception as exc:
        return f"load_mask raised {type(exc).__name__}: {exc}"
    if mask.dtype != bool or mask.shape != (image.height, image.width):
        return f"mask {mask.dtype} {mask.shape} for a {image.size} image"
    return None


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")  # Pillow on corrupt/old formats
def test_every_format_truncated_and_bit_flipped_decodes_or_is_refused() -> None:
    rng = np.random.default_rng(1)
    samples = _samples()
    assert {fmt for fmt, _, _ in samples} >= set(ALLOWED_FORMATS) | {"DDS", "EPS", "PDF", "TGA"}
    failures = []
    for fmt, mode, data in samples:
        if fmt in ALLOWED_FORMATS or fmt == "MPO":
            try:
                decoded = load_image(data)
            except REFUSED as exc:
                if mode in ("RGB", "L", "P"):  # every allowed format must read its plain modes
                    failures.append(f"{fmt}/{mode}: a valid file was refused: {exc}")
            else:
                if decoded.mode != "RGB" or decoded.size != (23, 17):
                    failures.append(f"{fmt}/{mode}: decoded to {decoded.mode} {decoded.size}")
        else:
            with pytest.raises(InvalidImageError):
                load_image(data)
        for index, variant in enumerate(_variants(data, rng)):
            if (problem := _decode(variant)) is not None:
                failures.append(f"{fmt}/{mode} variant {index}: {problem}")
    assert not failures, "\n".join(failures)


def test_a_dds_pillow_cannot_decode_is_refused_naming_its_format() -> None:
    data = _odd_dds()
    with pytest.raises(NotImplementedError), Image.open(io.BytesIO(data)):  # what reached the service before
        pass
    with pytest.raises(InvalidImageError, match="DDS"):
        load_image(data)


@pytest.mark.parametrize("error", [NotImplementedError, RuntimeError, KeyError, struct.error, RecursionError])
def test_any_decoder_failure_is_an_invalid_image(monkeypatch: pytest.MonkeyPatch, error: type[Exception]) -> None:
    def broken(self: ImageFile.ImageFile) -> None:
        raise error("decoder bug")

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken)
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    with pytest.raises(InvalidImageError, match="decoder bug"):
        load_image(png.getvalue())


def test_running_out_of_memory_while_decoding_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(self: ImageFile.ImageFile) -> None:
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", exhausted)
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    with pytest.raises(ImageTooLargeError, match="memory"):
        load_image(png.getvalue())


def test_only_the_first_frame_of_multi_frame_files_is_decoded() -> None:
    frames = [Image.new("RGB", (8, 6), colour) for colour in ("red", "lime", "blue")]
    for fmt in ("GIF", "TIFF", "WEBP"):
        buffer = io.BytesIO()
        frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:])
        decoded = np.asarray(load_image(buffer.getvalue()))
        assert decoded.shape == (6, 8, 3) and decoded[..., 0].min() > 200 and decoded[..., 1].max() < 60, fmt


def test_max_side_decodes_large_images_reduced() -> None:
    array = np.random.default_rng(2).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    for fmt in ("JPEG", "PNG"):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt)
        assert load_image(buffer.getvalue(), max_side=200).size == (167, 100), fmt  # reduced by 3 (ceil)
        assert load_image(buffer.getvalue(), max_side=256).size == (250, 150), fmt
        assert load_image(buffer.getvalue(), max_side=500).size == (500, 300), fmt
