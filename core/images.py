"""Decoding and preprocessing of images and masks, as the official INSID3 does it.

Images may be paths, bytes, PIL images or numpy arrays. They are decoded with EXIF orientation
applied, converted to 8-bit RGB (grayscale, RGBA, palette and 16-bit included), squashed to
``image_size`` x ``image_size`` with PIL's antialiased bilinear resize (what torchvision's
``Resize`` does on a PIL image) and normalised with the ImageNet mean/std.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from core.defaults import DEFAULT_MAX_PIXELS
from core.errors import (
    EmptyMaskError,
    ImageTooLargeError,
    InvalidImageError,
    MaskShapeError,
)

ImageInput = str | Path | bytes | bytearray | Image.Image | np.ndarray

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ASPECT_TOLERANCE = 0.02


def _open(source: ImageInput, what: str, max_pixels: int) -> Image.Image:
    """A fully decoded PIL image with EXIF orientation applied."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        return Image.fromarray(_array_to_uint8(source, what))
    else:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise InvalidImageError(f"{what} is empty (0 bytes)")
            stream: io.BytesIO | Path = io.BytesIO(source)
        else:
            stream = Path(source)
            if not stream.is_file():
                raise InvalidImageError(f"{what}: no such file {str(stream)!r}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(stream)
                _check_pixels(image, what, max_pixels)
                image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLargeError(f"{what} is too large to decode safely: {exc}") from None
        except ImageTooLargeError:
            raise
        except UnidentifiedImageError:
            raise InvalidImageError(f"{what} is not an image in a format we can read") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImageError(f"{what} is not a readable image: {exc}") from None
    _check_pixels(image, what, max_pixels)
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not reject an otherwise fine image
        return image


def _check_pixels(image: Image.Image, what: str, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImageError(f"{what} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} has {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )


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
    if np.issubdtype(array.dtype, np.integer):
        scale = 257.0 if array.max(initial=0) > 255 else 1.0
        return np.clip(array / scale, 0, 255).astype(np.uint8)
    raise InvalidImageError(f"{what}: unsupported array dtype {array.dtype}")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_array_to_uint8(np.asarray(image), "image")).convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``source`` to an RGB PIL image (EXIF orientation applied)."""
    return _to_rgb(_open(source, "image", max_pixels))


def load_mask(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a mask to a boolean HxW array: any non-zero value (any channel, palette index) is foreground."""
    if isinstance(source, np.ndarray) and source.ndim in (2, 3):
        array = source
    else:
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
