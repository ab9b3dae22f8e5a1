"""Label Studio's brush RLE: the ``"format": "rle"`` value of a ``brushlabels`` result.

Label Studio decodes it with ``@thi.ng/rle-pack`` into an RGBA image of the task's size (the
format ``label_studio_converter.brush.encode_rle`` writes and ``decode_rle`` reads). The bit stream:

- header: the value count (32 bits), the word size - 1 (5 bits: 8-bit words), and four run-length
  field widths - 1 (4 bits each: 3, 4, 8 and 16 bits);
- then chunks, each: 1 flag bit (1: a run of one repeated word, 0: literal words), 2 bits choosing
  a run-length field width, the count - 1 in that many bits, then the word (a run) or ``count``
  words (literals);
- 1 to 8 zero bits, up to a whole byte.

A mask becomes the RGBA image with every channel 255 on the mask, 0 elsewhere, row-major. Only runs
are written (every run of an RGBA-repeated mask is at least 4 values long).
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 8
RUN_FIELDS = (3, 4, 8, 16)  # bits of the count - 1 for the four run-length classes
CHANNELS = 4


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, values) of the runs of equal values in a 1-D array."""
    if values.size == 0:
        return np.zeros(0, dtype=np.int64), values
    ends = np.append(np.flatnonzero(values[1:] != values[:-1]), values.size - 1)
    lengths = np.diff(np.append(-1, ends))
    return lengths, values[ends]


def _run_chunk(length: int, value: int) -> str:
    """One run chunk (a run longer than 2**16 is several chunks)."""
    bits = []
    while length > 0:
        count = min(length, 1 << RUN_FIELDS[-1])
        field = next(i for i, width in enumerate(RUN_FIELDS) if count <= 1 << width)
        bits.append(f"1{field:02b}{count - 1:0{RUN_FIELDS[field]}b}{value:0{WORD_BITS}b}")
        length -= count
    return "".join(bits)


def encode_values(values: np.ndarray) -> list[int]:
    """The brush RLE of a flat uint8 array (what ``label_studio_converter.brush.encode_rle`` does)."""
    header = f"{values.size:032b}{WORD_BITS - 1:05b}" + "".join(f"{width - 1:04b}" for width in RUN_FIELDS)
    lengths, run_values = _runs(np.asarray(values, dtype=np.uint8))
    stream = header + "".join(_run_chunk(int(n), int(v)) for n, v in zip(lengths, run_values, strict=True))
    stream += "0" * (8 - len(stream) % 8)  # as label_studio_converter pads: a whole zero byte when aligned
    return list(np.packbits(np.frombuffer(stream.encode("ascii"), dtype=np.uint8) - 48))


def encode_mask(mask: np.ndarray) -> list[int]:
    """The brush RLE of an (H, W) bool mask, as Label Studio's ``value.rle`` (a list of byte values)."""
    pixels = np.asarray(mask, dtype=bool).ravel()
    lengths, run_values = _runs(pixels)
    expanded = np.repeat(run_values.astype(np.uint8) * 255, lengths * CHANNELS)
    return encode_values(expanded)


def decode_values(rle: list[int]) -> np.ndarray:
    """The flat uint8 array of a brush RLE (any chunk kind, as ``@thi.ng/rle-pack`` decodes it)."""
    bits = np.unpackbits(np.asarray(rle, dtype=np.uint8))
    position = 0

    def read(width: int) -> int:
        nonlocal position
        value = int("".join(map(str, bits[position:position + width])) or "0", 2)
        position += width
        return value

    total, word = read(32), read(5) + 1
    fields = [read(4) + 1 for _ in range(4)]
    out = np.zeros(total, dtype=np.uint8)
    index = 0
    while index < total:
        repeated = read(1)
        end = index + 1 + read(fields[read(2)])
        if repeated:
            out[index:end] = read(word)
        else:
            for i in range(index, end):
                out[i] = read(word)
        index = end
    return out


def decode_mask(rle: list[int], height: int, width: int) -> np.ndarray:
    """The (H, W) bool mask of a brush RLE (alpha channel > 0)."""
    return decode_values(rle).reshape(height, width, CHANNELS)[..., 3] > 0
