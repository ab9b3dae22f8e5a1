"""Decoding COCO-style segmentations (polygons, RLE, arrays) with pycocotools."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pycocotools.mask as mask_util

from evaluation.errors import DatasetFormatError


def _compressed(rle: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """A copy of ``rle`` with byte counts (str counts are ASCII-encoded, lists compressed)."""
    counts = rle["counts"]
    if isinstance(counts, list):
        return mask_util.frPyObjects(rle, *rle.get("size", (height, width)))
    if isinstance(counts, str):
        return {"size": rle["size"], "counts": counts.encode("ascii")}
    return rle


def decode_segmentation(segm: Any, height: int, width: int) -> npt.NDArray[np.bool_]:
    """One annotation's mask: polygon list (merged), RLE dict or 2-D array."""
    if isinstance(segm, list):
        if not segm:
            return np.zeros((height, width), dtype=bool)
        polygons = [np.asarray(polygon, dtype=np.float64) for polygon in segm]
        rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
        return mask_util.decode(rle).astype(bool)
    if isinstance(segm, dict):
        return mask_util.decode(_compressed(segm, height, width)).astype(bool)
    if isinstance(segm, np.ndarray) and segm.ndim == 2:
        return segm.astype(bool)
    raise DatasetFormatError(f"unsupported segmentation of type {type(segm).__name__}")


def union(segms: list[Any], height: int, width: int) -> npt.NDArray[np.bool_]:
    """The union of several annotations' masks (all zero when there are none)."""
    mask = np.zeros((height, width), dtype=bool)
    for segm in segms:
        mask |= decode_segmentation(segm, height, width)
    return mask


def decode_rles(rles: list[dict[str, Any]]) -> npt.NDArray[np.bool_] | None:
    """The OR of several RLEs of one image, or ``None`` when there is no RLE at all."""
    if not rles:
        return None
    first = rles[0]["size"]
    decoded = mask_util.decode([_compressed(rle, *first) for rle in rles])
    return decoded.any(axis=-1)
