"""Decoding and preprocessing of images and masks, as the official INSID3 does it.

Images may be paths, bytes, PIL images or numpy arrays. They are decoded with EXIF orientation
applied, converted to 8-bit RGB (grayscale, RGBA, palette and 16-bit included), squashed to
``image_size`` x ``image_size`` with PIL's antialiased bilinear resize (what torchvision's
``Resize`` does on a PIL image) and normalised with the ImageNet mean/std.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from core.defaults import DEFAULT_MAX_PIXELS
from core.errors import (
    EmptyMaskError,
    ImageShapeError,
    ImageTooLargeError,
    InvalidImageError,
    MaskShapeError,
)

ImageInput = str | Path | bytes | bytearray | Image.Image | np.ndarray

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ASPECT_TOLERANCE = 0.02
# The decoders an upload may use: the formats cameras, phones (multi-picture JPEGs open as JPEG/MPO),
# browsers and scientific tools produce. Pillow's other plugins (DDS, EPS through Ghostscript, PSD,
# FITS, ...) are rarely sent and widen the attack surface, so they are refused with a 415.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
# Pillow allocates decoded images in blocks (16 MB by default). Blocks over glibc's largest mmap
# threshold (32 MB) are mapped and unmapped on their own, so a huge image's memory goes back to
# the OS when it is freed instead of staying in a thread's malloc arena.
PILLOW_BLOCK_BYTES = 64 << 20
if Image.core.get_block_size() < PILLOW_BLOCK_BYTES:
    Image.core.set_block_size(PILLOW_BLOCK_BYTES)
# Limits checked from the header, before any pixel is decoded. A side over MAX_SIDE would make
# per-row and per-column buffers (mask upsampling, rendering) the size of a whole image; an aspect
# ratio over MAX_ASPECT_RATIO squashed to the square network input leaves nothing to segment.
MAX_SIDE = 32768
MAX_ASPECT_RATIO = 100
# A progressive JPEG is decoded scan by scan, each one a pass over every block of the image
# whatever its size in bytes: thousands of tiny scans make a "scan bomb" that decodes for minutes.
# Encoders write about 10 scans (libjpeg's progressive script); MAX_JPEG_SCANS is far above that,
# and MAX_JPEG_SCAN_PIXELS (scans x pixels) bounds the passes over a large image: 100 scans of
# 16 Mpx, 25 of 64 Mpx, about 2 s of decoding on one CPU core.
MAX_JPEG_SCANS = 100
MAX_JPEG_SCAN_PIXELS = 100 * 16_000_000
_SOS = b"\xff\xda"


def _open(source: ImageInput, what: str, max_pixels: int, max_side: int | None = None) -> Image.Image:
    """A fully decoded PIL image with EXIF orientation applied (the first frame of multi-frame files)."""
    if isinstance(source, Image.Image):
        _check_pixels(source, what, max_pixels)
        with _decoding(what):
            return _transposed(source, in_place=False)
    if isinstance(source, np.ndarray):
        return Image.fromarray(_array_to_uint8(source, what))
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise InvalidImageError(f"{what} is empty (0 bytes)")
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        stream = Path(source)
        if not stream.is_file():
            raise InvalidImageError(f"{what}: no such file {str(stream)!r}")
    with _decoding(what):
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(stream, formats=ALLOWED_FORMATS)
            except UnidentifiedImageError:
                raise InvalidImageError(_unidentified(stream, what)) from None
            _check_pixels(image, what, max_pixels)
            if image.format in ("JPEG", "MPO"):
                _check_scans(stream, image.width * image.height, what)
            reduced = None if max_side is None else _reduced_size(image.size, max_side)
            if reduced is not None:  # JPEG: decode at the smallest DCT scale near the reduced size
                factor = _reduction(image.size, max_side)
                image.draft(None, (max(1, image.width // factor), max(1, image.height // factor)))
            image.load()
            if reduced is not None and image.size != reduced:
                image = _to_rgb(image).resize(reduced, Image.BOX)
        return _transposed(image, in_place=True)


@contextmanager
def _decoding(what: str) -> Iterator[None]:
    """Any failure of Pillow on an upload becomes a 415 (or a 413 for size and memory)."""
    try:
        yield
    except (InvalidImageError, ImageTooLargeError, ImageShapeError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{what} is too large to decode safely: {exc}") from None
    except MemoryError:
        raise ImageTooLargeError(f"{what} needs more memory to decode than is available") from None
    except Exception as exc:  # decoding is total: a broken file is the sender's error
        raise InvalidImageError(f"{what} is not a readable image: {type(exc).__name__}: {exc}") from None


def _unidentified(stream: io.BytesIO | Path, what: str) -> str:
    """Why Pillow's allow-listed decoders refused ``stream``: the format it is in, when known."""
    with stream.open("rb") if isinstance(stream, Path) else contextlib.nullcontext(stream) as file:
        file.seek(0)
        prefix = file.read(16)
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if name not in ALLOWED_FORMATS and accept is not None and _accepts(accept, prefix):
            return f"{what} is a {name} image, which is not accepted (accepted: {', '.join(ALLOWED_FORMATS)})"
    return f"{what} is not an image in a format we can read (accepted: {', '.join(ALLOWED_FORMATS)})"


def _accepts(accept: Callable[[bytes], object], prefix: bytes) -> bool:
    try:
        return bool(accept(prefix))
    except Exception:  # a plugin's sniffer failing only means "not this format"
        return False


def _transposed(image: Image.Image, in_place: bool) -> Image.Image:
    """``image`` with its EXIF orientation applied; a broken EXIF block leaves it as it is."""
    try:
        exif = image.getexif()
    except Exception:  # a broken EXIF block must not reject an otherwise fine image
        return image
    if exif.get(ExifTags.Base.Orientation, 1) in (None, 1):
        return image
    try:
        transposed = ImageOps.exif_transpose(image, in_place=in_place)
    except Exception:  # as above
        return image
    return image if transposed is None else transposed


def _reduction(size: tuple[int, int], max_side: int) -> int:
    """The integer factor that brings the long side of ``size`` to at most ``max_side``."""
    return math.ceil(max(size) / max_side)


def _reduced_size(size: tuple[int, int], max_side: int) -> tuple[int, int] | None:
    """``size`` divided by that factor (rounded up), None when it already fits."""
    if max(size) <= max_side:
        return None
    factor = _reduction(size, max_side)
    return math.ceil(size[0] / factor), math.ceil(size[1] / factor)


def _check_pixels(image: Image.Image, what: str, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImageError(f"{what} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} has {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    _check_shape(width, height, what)


def _check_shape(width: int, height: int, what: str) -> None:
    """``ImageTooLargeError`` for a side over ``MAX_SIDE``, ``ImageShapeError`` for an aspect
    ratio over ``MAX_ASPECT_RATIO``."""
    if max(width, height) > MAX_SIDE:
        raise ImageTooLargeError(
            f"{what} is {width}x{height}: a side over the limit of {MAX_SIDE} pixels per side")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageShapeError(
            f"{what} is {width}x{height}: an aspect ratio over the limit of {MAX_ASPECT_RATIO}:1")


def _check_scans(stream: io.BytesIO | Path, pixels: int, what: str) -> None:
    """``ImageTooLargeError`` for a JPEG of more than ``MAX_JPEG_SCANS`` scans, or of more scans
    than ``MAX_JPEG_SCAN_PIXELS`` allows at its size (a scan bomb)."""
    scans = jpeg_scans(stream.getvalue() if isinstance(stream, io.BytesIO) else stream.read_bytes())
    limit = max(1, min(MAX_JPEG_SCANS, MAX_JPEG_SCAN_PIXELS // pixels))
    if scans > limit:
        raise ImageTooLargeError(
            f"{what} is a JPEG of {scans} scans, over the limit of {limit} scans for its {pixels} pixels "
            f"(at most {MAX_JPEG_SCANS}, and {MAX_JPEG_SCAN_PIXELS} scans x pixels: each scan is a pass "
            "over the whole image)")


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS markers) a JPEG holds, counted without decoding: the header segments
    are skipped by their lengths (an EXIF thumbnail's scans do not count); after the first scan,
    every SOS marker counts (entropy-coded data never holds one: its 0xFF bytes are stuffed)."""
    position = 2  # after SOI
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return 0  # not a marker: Pillow reports the broken file
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if data[position:position + 2] == _SOS:
            return 1 + data.count(_SOS, position + 2)
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return 0


def _array_to_uint8(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InvalidImageError(f"{what}: expected an HxW, HxWx3 or HxWx4 array, got {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):  # integer arithmetic: no float64 copy of the image
        if array.max(initial=0) > 255:
            array = array // 257
        return np.clip(array, 0, 255).astype(np.uint8)
    raise InvalidImageError(f"{what}: unsupported array dtype {array.dtype}")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_array_to_uint8(np.asarray(image), "image")).convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> Image.Image:
    """Decode ``source`` to an RGB PIL image (EXIF orientation applied).

    ``max_side``: a longer image is reduced by the smallest integer factor that fits (rounded up),
    decoded at a reduced scale where the format allows (JPEG), for pictures that need no more.
    """
    image = _open(source, "image", max_pixels, max_side)
    with _decoding("image"):
        image = _to_rgb(image)
        reduced = None if max_side is None else _reduced_size(image.size, max_side)
        return image if reduced is None else image.resize(reduced, Image.BOX)  # PIL images and arrays


def load_mask(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a mask to a boolean HxW array: any non-zero value (any channel, palette index) is foreground."""
    if isinstance(source, np.ndarray) and source.ndim in (2, 3):
        array = source
    else:
        with _decoding("mask"):
            array = np.asarray(_open(source, "mask", max_pixels))  # palette masks: the index (as official)
    if array.ndim == 3:
        array = array.any(axis=2)
    return np.asarray(array != 0)


def check_mask(mask: np.ndarray, image_size: tuple[int, int]) -> None:
    """Reject empty masks and masks whose aspect ratio differs from the image's ``(H, W)``."""
    if not mask.any():
        raise EmptyMaskError("the reference mask is empty: it has no foreground (non-zero) pixel")
    mask_h, mask_w = mask.shape
    image_h, image_w = image_size
    if abs(mask_h / mask_w - image_h / image_w) > ASPECT_TOLERANCE * (image_h / image_w):
        raise MaskShapeError(
            f"the mask is {mask_w}x{mask_h} (WxH) but its image is {image_w}x{image_h}: "
            "the aspect ratios differ"
        )


def resize_square(image: Image.Image, image_size: int) -> np.ndarray:
    """(S, S, 3) uint8: PIL's antialiased bilinear squash, what torchvision ``Resize((S, S))`` does."""
    return np.asarray(image.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(3, S, S) float32 ImageNet-normalised tensor of (S, S, 3) uint8 pixels."""
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


def mask_to_tensor(mask: np.ndarray, image_size: int) -> torch.Tensor:
    """(S, S) bool: the mask resized with torch's legacy ``nearest``, as the official code does."""
    as_float = torch.from_numpy(mask.astype(np.float32))[None, None]
    resized = F.interpolate(as_float, size=(image_size, image_size), mode="nearest")
    return resized[0, 0] > 0.5
