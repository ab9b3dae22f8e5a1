"""Chest X-ray (Lung Segmentation): one class, 600 episodes drawn over the mask files."""

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

LABEL = "Chest X-ray"
EPISODES = 600
SHENZHEN_SUFFIX = len("_mask.png")


class LungDataset(FileListDataset):
    """``LungSegmentation/CXR_png`` (images) and ``LungSegmentation/masks``."""

    name = "lung"

    def __init__(self, data_root: Path, fold: int, shot: int) -> None:
        base = require_dir(data_root / "LungSegmentation", LABEL)
        self.images = require_dir(base / "CXR_png", LABEL)
        masks = require_dir(base / "masks", LABEL)
        self.shot = shot
        self.class_ids = [0]
        self.meter_width = 2  # as the official meter; only class 0 is evaluated
        self.masks = [p for p in sorted_glob(masks) if second_dot_field(p.name) == "png"]
        if not self.masks:
            raise DatasetFormatError(f"{LABEL}: no .png mask in {masks}")

    def __len__(self) -> int:
        return EPISODES

    def _sample(self, mask_path: Path) -> Sample:
        name = mask_path.name
        image_name = name if "MCUCXR" in name else name[:-SHENZHEN_SUFFIX] + ".png"
        image = open_image(self.images / image_name, LABEL)
        return Sample(name, image, read_binary_mask(mask_path, LABEL))

    def episode(self, index: int, rng: np.random.RandomState) -> Episode:
        return self._file_episode(index, 0, self.masks, rng)
