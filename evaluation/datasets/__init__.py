"""Loaders of the official benchmarks, by ``--dataset`` name."""

from __future__ import annotations

from pathlib import Path

from evaluation.datasets.base import Episode, Sample, SegmentationDataset
from evaluation.datasets.coco import CocoDataset
from evaluation.datasets.isaid import IsaidDataset
from evaluation.datasets.isic import IsicDataset
from evaluation.datasets.lung import LungDataset
from evaluation.datasets.lvis import LvisDataset
from evaluation.datasets.paco_part import PacoPartDataset
from evaluation.datasets.pascal_part import PascalPartDataset
from evaluation.datasets.permis import PermisDataset
from evaluation.datasets.spair import KeypointPair, SpairDataset
from evaluation.datasets.suim import SuimDataset

SEGMENTATION: dict[str, type[SegmentationDataset]] = {
    cls.name: cls
    for cls in (
        CocoDataset,
        LvisDataset,
        PascalPartDataset,
        PacoPartDataset,
        IsaidDataset,
        IsicDataset,
        LungDataset,
        SuimDataset,
        PermisDataset,
    )
}
KEYPOINT = "spair"
DATASET_NAMES: tuple[str, ...] = (*SEGMENTATION, KEYPOINT)


def folds_of(name: str) -> int:
    """Number of folds of ``name`` (0 when it has none)."""
    return SEGMENTATION[name].folds if name in SEGMENTATION else 0


def build_segmentation(name: str, data_root: Path, fold: int, shot: int) -> SegmentationDataset:
    """The loader of segmentation benchmark ``name`` for one fold."""
    return SEGMENTATION[name](data_root, fold, shot)


__all__ = [
    "DATASET_NAMES",
    "KEYPOINT",
    "SEGMENTATION",
    "Episode",
    "KeypointPair",
    "Sample",
    "SegmentationDataset",
    "SpairDataset",
    "build_segmentation",
    "folds_of",
]
