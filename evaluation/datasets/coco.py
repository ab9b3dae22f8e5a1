"""COCO-20i: 80 classes in 4 folds, 1000 episodes with a random class each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.datasets.base import (
    Episode,
    Sample,
    SegmentationDataset,
    load_pickle,
    open_image,
    read_array,
    require_dir,
)
from evaluation.errors import DatasetFormatError
from evaluation.sampling import draw, draw_references

LABEL = "COCO-20i"
EPISODES = 1000
N_CLASSES = 80
N_FOLDS = 4


class CocoDataset(SegmentationDataset):
    """``COCO2014/``: images, semantic label PNGs (class c stored as c+1) and fold pickles."""

    name = "coco"
    folds = N_FOLDS

    def __init__(self, data_root: Path, fold: int, shot: int) -> None:
        self.base = require_dir(data_root / "COCO2014", LABEL)
        require_dir(self.base / "annotations", LABEL, "label PNGs under annotations/{train2014,val2014}")
        self.shot = shot
        self.class_ids = [fold + N_FOLDS * v for v in range(N_CLASSES // N_FOLDS)]
        self.meter_width = N_CLASSES
        split = load_pickle(self.base / "splits" / "val" / f"fold{fold}.pkl", LABEL)
        self.images_of: dict[int, list[str]] = {c: list(split.get(c, [])) for c in self.class_ids}
        empty = [c for c, images in self.images_of.items() if not images]
        if empty:
            raise DatasetFormatError(f"{LABEL}: splits/val/fold{fold}.pkl lists no image for classes {empty}")

    def __len__(self) -> int:
        return EPISODES

    def _sample(self, name: str, class_id: int) -> Sample:
        label = read_array(self.base / "annotations" / (name[: name.index(".jpg")] + ".png"), LABEL)
        return Sample(name, open_image(self.base / name, LABEL), (label == class_id + 1).astype(np.uint8))

    def episode(self, index: int, rng: np.random.RandomState) -> Episode:
        class_id = int(draw(rng, self.class_ids))
        pool = self.images_of[class_id]
        target = draw(rng, pool)
        refs = list(draw_references(rng, pool, self.shot, lambda name: name == target))
        return Episode(
            index,
            class_id,
            self._sample(target, class_id),
            [self._sample(name, class_id) for name in refs],
        )
