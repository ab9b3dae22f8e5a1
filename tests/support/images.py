"""Test images: one encoder, and one maker of scenes with a known answer (coloured discs on clutter)."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

RED = (220, 30, 30)
BLUE = (30, 30, 220)


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """``image`` (an HxW or HxWx3 uint8 array, or a PIL image) encoded as ``fmt`` (PNG, JPEG, ...)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode(data: bytes, mode: str | None = None) -> np.ndarray:
    """Encoded image bytes as an array (converted to ``mode``, e.g. "RGB", when given)."""
    image = Image.open(io.BytesIO(data))
    return np.asarray(image.convert(mode) if mode else image)


@dataclass(frozen=True)
class Scene:
    """An RGB image and the boolean mask of its disc(s)."""

    image: np.ndarray
    mask: np.ndarray

    @property
    def png(self) -> bytes:
        return encode(self.image)

    @property
    def mask_png(self) -> bytes:
        return encode((self.mask * 255).astype(np.uint8))


def disc_scene(seed: int, height: int, width: int, discs: list[tuple[int, int, int]], colour=RED,
               clutter: int = 12) -> Scene:
    """Noise and ``clutter`` random rectangles, with solid discs (cy, cx, r) of ``colour`` on top."""
    rng = np.random.default_rng(seed)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    for _ in range(clutter):
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


def undecodable_dds() -> bytes:
    """A DDS file without pixel-format flags: Pillow recognises it, then raises NotImplementedError."""
    header = struct.pack("<4I", 124, 0x1007, 8, 8) + bytes(8 + 44) + struct.pack("<4I", 32, 0, 0, 32) + bytes(36)
    return b"DDS " + header + bytes(8 * 8 * 4)


def _jpeg_parts(data: bytes) -> list[bytes]:
    """A JPEG split into its segments (a scan with its entropy-coded data), SOI and EOI included."""
    parts, position = [data[:2]], 2
    while data[position + 1] != 0xD9:
        end = position + 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if data[position + 1] == 0xDA:  # the scan's data runs to the next marker (not 0xFF00 or RSTn)
            end = data.index(b"\xff", end)
            while data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end = data.index(b"\xff", end + 2)
        parts.append(data[position:end])
        position = end
    return [*parts, data[position:]]


def scan_bomb(side: int = 2048, size: int = 2_000_000) -> bytes:
    """A progressive JPEG of ``size`` bytes whose smallest scan is repeated until it is that
    large (thousands of times): each repeat is a decoding pass over the whole ``side``² image."""
    yy, xx = np.mgrid[:side, :side]
    gradient = np.stack([xx * 255 // side, yy * 255 // side, (xx + yy) * 127 // side], axis=-1)
    parts = _jpeg_parts(encode(gradient.astype(np.uint8), "JPEG", progressive=True, quality=90))
    smallest = min((part for part in parts if part[1] == 0xDA), key=len)
    body = b"".join(parts[:-1])
    return body + smallest * ((size - len(body)) // len(smallest)) + parts[-1]


def thin_png(width: int = 64_000_000) -> bytes:
    """A ``width``x1 black RGB PNG, compressed to a fraction of a megabyte (written without
    holding the image: ``width`` 64,000,000 gives 187 KB)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor, row = zlib.compressobj(9), width * 3
    pixels = [compressor.compress(b"\x00")]  # the row's filter type
    pixels += [compressor.compress(bytes(min(1 << 24, row - start))) for start in range(0, row, 1 << 24)]
    header = struct.pack(">IIBBBBB", width, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", b"".join(pixels) + compressor.flush()) + chunk(b"IEND", b""))


# The scenes of the service tests (API, workers, deployment).
REFERENCE = disc_scene(1, 160, 200, [(70, 90, 35)])
REFERENCE_2 = disc_scene(2, 150, 150, [(80, 70, 30)])
TARGET = disc_scene(10, 150, 180, [(60, 100, 30)])
TARGET_2 = disc_scene(11, 140, 170, [(80, 60, 28)])
TWO_DISCS = disc_scene(12, 160, 240, [(60, 60, 28), (90, 170, 30)])


def small_scene(seed: int) -> Scene:
    """A 72x88 scene with one disc: many distinct, cheap images for the worker-pool tests."""
    return disc_scene(seed, 72, 88, [(36, 44, 14)], clutter=4)
