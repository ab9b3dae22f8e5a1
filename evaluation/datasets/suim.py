"""SUIM: 7 underwater categories cycled by index; one episode per non-empty mask."""

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
    sorted_glob,
)
from evaluation.errors import DatasetFormatError

LABEL = "SUIM"
CATEGORIES = ("FV", "HD", "PF", "RI", "RO", "SR", "WR")


class SuimDataset(FileListDataset):
    """``SUIM/images/<stem>.jpg`` and ``SUIM/masks/<category>/<stem>.<ext>``."""

    name = "suim"

    def __init__(self, data_root: Path, fold: int, shot: int) -> None:
        base = require_dir(data_root / "SUIM", LABEL)
        self.images = require_dir(base / "images", LABEL)
        self.shot = shot
        self.class_ids = list(range(len(CATEGORIES)))
        self.meter_width = len(CATEGORIES)
        self.masks_of: list[list[Path]] = []
        for category in CATEGORIES:
            folder = require_dir(base / "masks" / category, LABEL)
            kept = [p for p in sorted_glob(folder) if read_binary_mask(p, LABEL).any()]
            if not kept:
                raise DatasetFormatError(f"{LABEL}: no non-empty mask in {folder}")
            self.masks_of.append(kept)

    def __len__(self) -> int:
        return sum(len(masks) for masks in self.masks_of)

    def _sample(self, mask_path: Path) -> Sample:
        image = open_image(self.images / (mask_path.name.split(".")[0] + ".jpg"), LABEL)
        return Sample(f"{mask_path.parent.name}/{mask_path.name}", image, read_binary_mask(mask_path, LABEL))

    def episode(self, index: int, rng: np.random.RandomState) -> Episode:
        class_id = index % len(CATEGORIES)
        return self._file_episode(index, class_id, self.masks_of[class_id], rng)
