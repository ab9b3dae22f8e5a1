"""Error types raised by the engine.

Every error carries a stable machine-readable ``code`` and a human ``detail``; the HTTP layer
maps them to status codes, the CLI prints ``detail`` without a stack trace.
"""

from __future__ import annotations


class Insid3Error(Exception):
    """Base class of every error the engine raises on purpose."""

    code = "insid3_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInputError(Insid3Error):
    """The caller's input (image, mask, points, parameters) cannot be used."""

    code = "invalid_input"


class InvalidImageError(InvalidInputError):
    """Bytes or array that do not decode to an image."""

    code = "invalid_image"


class ImageTooLargeError(InvalidInputError):
    """An image whose pixel count exceeds the configured limit (or a decompression bomb)."""

    code = "image_too_large"


class ImageShapeError(InvalidInputError):
    """An image whose aspect ratio is beyond what the square network input can make sense of."""

    code = "image_shape_unsupported"


class EmptyMaskError(InvalidInputError):
    """A reference mask without a single foreground pixel."""

    code = "empty_mask"


class MaskShapeError(InvalidInputError):
    """A mask whose aspect ratio differs from its image's."""

    code = "mask_shape_mismatch"


class IncompatibleReferenceError(InvalidInputError):
    """Reference features computed by another model or at another image size."""

    code = "incompatible_reference"


class ConfigurationError(Insid3Error):
    """Engine settings that cannot work (e.g. ``svd_components`` >= channels)."""

    code = "invalid_configuration"


class WeightsError(Insid3Error):
    """Backbone weights that are missing, corrupt or of another architecture."""

    code = "weights_error"


class WeightsNotFoundError(WeightsError):
    code = "weights_not_found"


class CorruptWeightsError(WeightsError):
    code = "weights_corrupt"


class ArchitectureMismatchError(WeightsError):
    code = "weights_architecture_mismatch"


class MissingExtraError(Insid3Error):
    """An optional feature whose extra dependency is not installed."""

    code = "missing_extra"
