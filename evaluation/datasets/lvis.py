"""LVIS-92i: the categories with more than ``shot`` images, in 10 folds, cycled by index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evaluation.datasets.base import (
    Episode,
    Sample,
    SegmentationDataset,
    load_pickle,
    open_image,
    require_dir,
)
from evaluation.datasets.masks import union
from evaluation.errors import DatasetFormatError
from evaluation.sampling import draw, draw_references

LABEL = "LVIS-92i"
EPISODES = 2300
N_FOLDS = 10
METER_WIDTH = 1203


class LvisDataset(SegmentationDataset):
    """``LVIS/lvis_val.pkl`` ({category: {image path: info}}) and images under ``LVIS/coco``."""

    name = "lvis"
    folds = N_FOLDS

    def __init__(self, data_root: Path, fold: int, shot: int) -> None:
        base = require_dir(data_root / "LVIS", LABEL)
        self.images = require_dir(base / "coco", LABEL, "COCO 2017 images: coco/{train2017,val2017}")
        self.shot = shot
        self.annotations: dict[Any, dict[str, Any]] = load_pickle(base / "lvis_val.pkl", LABEL)
        kept = [cat for cat, imgs in self.annotations.items() if len(imgs) > shot]
        per_fold = len(kept) // N_FOLDS
        if per_fold == 0:
            raise DatasetFormatError(
                f"{LABEL}: only {len(kept)} categories have more than {shot} images, fewer than {N_FOLDS}"
            )
        self.categories = [kept[fold + N_FOLDS * v] for v in range(per_fold)]
        self.class_ids = list(range(per_fold))
        self.meter_width = METER_WIDTH

    def __len__(self) -> int:
        return EPISODES

    def _sample(self, name: str, category: Any) -> Sample:
        image = open_image(self.images / name, LABEL)
        segms = [ann["segmentation"] for ann in self.annotations[category][name]["annotations"]]
        return Sample(name, image, union(segms, image.height, image.width))

    def episode(self, index: int, rng: np.random.RandomState) -> Episode:
        class_id = index % len(self.categories)
        category = self.categories[class_id]
        pool = list(self.annotations[category])
        target = draw(rng, pool)
        refs = list(draw_references(rng, pool, self.shot, lambda name: name == target))
        return Episode(
            index,
            class_id,
            self._sample(target, category),
            [self._sample(name, category) for name in refs],
        )
