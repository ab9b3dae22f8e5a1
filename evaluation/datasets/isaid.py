"""iSAID-5i: 15 aerial classes in 3 folds; the split file fixes each episode's target."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.datasets.base import (
    Episode,
    Sample,
    SegmentationDataset,
    open_image,
    read_array,
    require_dir,
    require_file,
)
from evaluation.errors import DatasetFormatError
from evaluation.sampling import draw_references

LABEL = "iSAID-5i"
N_CLASSES = 15
N_FOLDS = 3
IGNORE_VALUE = 255


class IsaidDataset(SegmentationDataset):
    """``iSAID/val/{images,semantic_png}`` and ``iSAID/splits/val/fold{0,1,2}.txt``."""

    name = "isaid"
    folds = N_FOLDS

    def __init__(self, data_root: Path, fold: int, shot: int) -> None:
        base = require_dir(data_root / "iSAID", LABEL)
        self.images = require_dir(base / "val" / "images", LABEL)
        self.labels = require_dir(base / "val" / "semantic_png", LABEL)
        split = require_file(base / "splits" / "val" / f"fold{fold}.txt", LABEL)
        self.shot = shot
        per_fold = N_CLASSES // N_FOLDS
        self.class_ids = [fold * per_fold + i for i in range(per_fold)]
        self.meter_width = N_CLASSES
        # The official parser drops the last element of split("\n") (a trailing newline assumed).
        self.lines: list[tuple[str, int]] = []
        for line in split.read_text(encoding="utf-8").split("\n")[:-1]:
            name, sep, k = line.partition("__")
            if not sep or not k.strip().isdigit():
                raise DatasetFormatError(f"{LABEL}: {split}: malformed line {line!r} (expected <name>__<k>)")
            self.lines.append((name, int(k) - 1))
        self.images_of: dict[int, list[str]] = {}
        for name, class_id in self.lines:
            self.images_of.setdefault(class_id, []).append(name)

    def __len__(self) -> int:
        return len(self.lines)

    def _label(self, name: str) -> np.ndarray:
        label = read_array(self.labels / f"{name}_instance_color_RGB.png", LABEL)
        if label.ndim != 2:
            raise DatasetFormatError(f"{LABEL}: label {name} is not a single-channel PNG")
        return label

    def episode(self, index: int, rng: np.random.RandomState) -> Episode:
        target, class_id = self.lines[index]
        refs = list(draw_references(rng, self.images_of[class_id], self.shot, lambda n: n == target))
        label = self._label(target)
        return Episode(
            index,
            class_id,
            Sample(target, open_image(self.images / f"{target}.png", LABEL, rgb=False),
                   (label == class_id + 1).astype(np.float32)),
            [
                Sample(name, open_image(self.images / f"{name}.png", LABEL, rgb=False),
                       (self._label(name) == class_id + 1).astype(np.float32))
                for name in refs
            ],
            ignore=label == IGNORE_VALUE,
        )
