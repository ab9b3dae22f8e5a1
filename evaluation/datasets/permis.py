"""PerMIS: per video, frame 0 is the reference of frames 1 and 2; no randomness, one shot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.datasets.base import (
    Episode,
    Sample,
    SegmentationDataset,
    open_image,
    require_dir,
    require_file,
)
from evaluation.errors import DatasetFormatError

LABEL = "PerMIS"
MASKS_FILE = "masks.npz.npy"  # the official loader's file name (the docs say masks.npz)


class PermisDataset(SegmentationDataset):
    """``PerMIRS/<video>/{0,1,2}.jpg`` plus ``masks.npz.npy`` (3 dicts {object id: mask})."""

    name = "permis"

    def __init__(self, data_root: Path, fold: int, shot: int) -> None:
        base = require_dir(data_root / "PerMIRS", LABEL)
        # The official follows os.listdir order; sorting keeps resumed runs stable and does not
        # change the single dataset-level IoU.
        self.videos = sorted(p for p in base.iterdir() if p.is_dir())
        if not self.videos:
            raise DatasetFormatError(f"{LABEL}: no video folder in {base}")
        self.class_ids = [0]
        self.meter_width = 1

    def __len__(self) -> int:
        return 2 * len(self.videos)

    def _frame(self, video: Path, masks: np.ndarray, frame: int) -> Sample:
        try:
            mask = np.asarray(next(iter(masks[frame].values())), dtype=np.int32)
        except (IndexError, AttributeError, StopIteration):
            raise DatasetFormatError(
                f"{LABEL}: {video / MASKS_FILE} lacks a mask for frame {frame}"
            ) from None
        return Sample(f"{video.name}/{frame}.jpg", open_image(video / f"{frame}.jpg", LABEL), mask)

    def episode(self, index: int, rng: np.random.RandomState) -> Episode:
        video = self.videos[index // 2]
        masks = np.load(require_file(video / MASKS_FILE, LABEL), allow_pickle=True)
        return Episode(index, 0, self._frame(video, masks, 1 + index % 2), [self._frame(video, masks, 0)])
