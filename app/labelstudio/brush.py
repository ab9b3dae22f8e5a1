"""Label Studio's brush RLE: the one home of the codec (encode and decode, numpy only).

The format is thi.ng's ``rle-pack`` as Label Studio uses it for ``BrushLabels`` (and as
``label_studio_sdk.converter.brush.encode_rle/decode_rle`` implement it): a bit stream of a 32-bit
value count, a 5-bit word size - 1, four 4-bit run-length field sizes - 1, then blocks of
``flag(1) size-index(2) length-1(size bits)`` followed by one word repeated (flag 1) or
``length`` literal words (flag 0), padded to whole bytes. A brush mask is the RGBA image of the
region flattened row by row (4 values per pixel); the region is its alpha channel.
"""

from __future__ import annotations

import numpy as np

from core.errors import InvalidInputError

WORD_BITS = 8
RUN_FIELD_BITS = (3, 4, 8, 16)  # the sizes Label Studio's encoder uses
MAX_RUN = 1 << RUN_FIELD_BITS[-1]
RUN_LIMITS = np.array([1 << bits for bits in RUN_FIELD_BITS[:-1]])  # 8, 16, 256
FOREGROUND = 255


class BrushDecodeError(InvalidInputError):
    """Brush RLE that cannot be decoded (truncated, inconsistent, or of the wrong size)."""

    code = "invalid_brush_rle"


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and values of the runs of equal values of a 1-d array."""
    ends = np.append(np.flatnonzero(values[1:] != values[:-1]), values.size - 1)
    lengths = np.diff(np.append(-1, ends))
    return lengths, values[ends]


def _chunks(lengths: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs longer than the longest run field split into pieces of ``MAX_RUN`` and a remainder."""
    pieces = np.maximum(1, -(-lengths // MAX_RUN))
    index = np.repeat(np.arange(lengths.size), pieces)
    first_piece = np.repeat(np.cumsum(pieces) - pieces, pieces)
    is_last = np.arange(index.size) - first_piece == pieces[index] - 1
    chunk = np.where(is_last, lengths[index] - (pieces[index] - 1) * MAX_RUN, MAX_RUN)
    return chunk, values[index]


def _pack(fields: np.ndarray, widths: np.ndarray) -> list[int]:
    """Fields written most significant bit first, one after the other, zero-padded as Label Studio
    pads (1 to 8 zero bits), as a list of byte values."""
    total = int(widths.sum())
    owner = np.repeat(np.arange(fields.size), widths)
    position = np.arange(total) - np.repeat(np.cumsum(widths) - widths, widths)
    bits = (fields[owner] >> (widths[owner] - 1 - position)) & 1
    bits = np.append(bits, np.zeros(WORD_BITS - total % WORD_BITS, dtype=bits.dtype))
    return np.packbits(bits.astype(np.uint8)).tolist()


def encode_rle(values: np.ndarray) -> list[int]:
    """A flat array of byte values (a flattened RGBA image) as brush RLE, byte for byte what
    ``label_studio_sdk.converter.brush.encode_rle`` gives."""
    values = np.asarray(values).ravel().astype(np.int64)
    if values.size == 0 or values.min() < 0 or values.max() >= 1 << WORD_BITS:
        raise ValueError("brush RLE encodes a non-empty array of values 0..255")
    lengths, run_values = _chunks(*_runs(values))
    size_index = np.searchsorted(RUN_LIMITS, lengths)  # the smallest run field that holds length - 1
    run_bits = np.array(RUN_FIELD_BITS)[size_index]
    blocks = np.stack([(lengths > 1).astype(np.int64), size_index, lengths - 1, run_values], axis=1).ravel()
    block_widths = np.stack([np.ones_like(run_bits), np.full_like(run_bits, 2), run_bits,
                             np.full_like(run_bits, WORD_BITS)], axis=1).ravel()
    header = np.array([values.size, WORD_BITS - 1, *(bits - 1 for bits in RUN_FIELD_BITS)], dtype=np.int64)
    header_widths = np.array([32, 5, 4, 4, 4, 4], dtype=np.int64)
    return _pack(np.concatenate([header, blocks]), np.concatenate([header_widths, block_widths]))


class _Bits:
    """Reads unsigned fields from a bit array, failing clearly past its end."""

    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int64)
        self.at = 0

    def take(self, count: int, width: int) -> np.ndarray:
        """``count`` consecutive fields of ``width`` bits."""
        end = self.at + count * width
        if end > self.bits.size:
            raise BrushDecodeError("brush RLE ends in the middle of a value (truncated)")
        fields = self.bits[self.at:end].reshape(count, width) @ (1 << np.arange(width - 1, -1, -1))
        self.at = end
        return fields

    def read(self, width: int) -> int:
        return int(self.take(1, width)[0])


def decode_rle(rle: list[int] | bytes, max_values: int) -> np.ndarray:
    """Brush RLE back into its flat array of values (at most ``max_values`` of them)."""
    try:
        data = bytes(rle)
    except (TypeError, ValueError):
        raise BrushDecodeError("brush RLE must be a list of byte values 0..255") from None
    stream = _Bits(data)
    count = stream.read(32)
    if count > max_values:
        raise BrushDecodeError(f"brush RLE of {count} values, over the limit of {max_values}")
    word_bits = stream.read(5) + 1
    field_bits = [stream.read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint8 if word_bits <= 8 else np.uint32)
    i = 0
    while i < count:
        repeated = stream.read(1)
        end = i + 1 + stream.read(field_bits[stream.read(2)])
        if end > count:
            raise BrushDecodeError(f"brush RLE run past its {count} values")
        out[i:end] = stream.read(word_bits) if repeated else stream.take(end - i, word_bits)
        i = end
    return out


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """A boolean (H, W) mask as the brush RLE of its RGBA image (255 on every channel where set)."""
    values = np.repeat(np.asarray(mask, dtype=bool).ravel().astype(np.uint8) * FOREGROUND, 4)
    return encode_rle(values)


def rle_to_mask(rle: list[int] | bytes, width: int, height: int) -> np.ndarray:
    """The boolean (height, width) region of brush RLE: its alpha channel, at least half covered."""
    values = decode_rle(rle, 4 * width * height)
    if values.size != 4 * width * height:
        raise BrushDecodeError(f"brush RLE of {values.size} values does not fit a {width}x{height} RGBA image")
    return values.reshape(height, width, 4)[:, :, 3] >= 128
