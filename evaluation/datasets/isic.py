"""ISIC 2018 (DR-Adapter split): 3 classes cycled by index, 600 episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.datasets.base import (
    Episode,
    FileListDataset,
    Sample,
    open_image,
    read_binary_mask,
    require_dir,
    second_dot_field,
    sorted_glob,
)
from evaluation.errors import DatasetFormatError

LABEL = "ISIC"
EPISODES = 600
CATEGORIES = ("1", "2", "3")


class IsicDataset(FileListDataset):
    """``ISIC/ISIC2018_Task1-2_Training_Input/{1,2,3}`` and ``ISIC/ISIC2018_Task1_Training_GroundTruth``."""

    name = "isic"

    def __init__(self, data_root: Path, fold: int, shot: int) -> None:
        base = require_dir(data_root / "ISIC", LABEL)
        inputs = require_dir(base / "ISIC2018_Task1-2_Training_Input", LABEL)
        self.truth = require_dir(base / "ISIC2018_Task1_Training_GroundTruth", LABEL)
        self.shot = shot
        self.class_ids = list(range(len(CATEGORIES)))
        self.meter_width = len(CATEGORIES)
        self.images_of: list[list[Path]] = []
        for category in CATEGORIES:
            folder = require_dir(inputs / category, LABEL, "made by DR-Adapter's ISIC_Split.py")
            kept = [p for p in sorted_glob(folder) if second_dot_field(p.name) == "jpg"]
            if not kept:
                raise DatasetFormatError(f"{LABEL}: no .jpg image in {folder}")
            self.images_of.append(kept)

    def __len__(self) -> int:
        return EPISODES

    def _sample(self, path: Path) -> Sample:
        stem = path.name.split(".")[0]
        mask = read_binary_mask(self.truth / f"{stem}_segmentation.png", LABEL)
        return Sample(f"{path.parent.name}/{path.name}", open_image(path, LABEL), mask)

    def episode(self, index: int, rng: np.random.RandomState) -> Episode:
        class_id = index % len(CATEGORIES)
        return self._file_episode(index, class_id, self.images_of[class_id], rng)
