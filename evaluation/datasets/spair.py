"""SPair-71k keypoint transfer (test split of ``Layout/large``), pairs in file order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from evaluation.datasets.base import load_json, open_image, require_dir, require_file
from evaluation.errors import DatasetFormatError

LABEL = "SPair-71k"
SPLIT = "test"


@dataclass
class KeypointPair:
    """Source keypoints to transfer and their ground truth on the target."""

    index: int
    name: str  # the layout line, e.g. ``1-2008_000585-2008_000615:aeroplane``
    category: str
    target_key: str  # ``<category>/<target image>``
    source: Image.Image
    target: Image.Image
    source_points: npt.NDArray[np.float32]  # (N, 2) x, y in source pixels
    target_points: npt.NDArray[np.float32]  # (N, 2) x, y in target pixels
    pck_threshold: float  # max(x2 - x1, y2 - y1) of the target box (no +1)


class SpairDataset:
    """``SPair-71k/{JPEGImages,PairAnnotation,Layout}``."""

    name = "spair"

    def __init__(self, data_root: Path) -> None:
        base = require_dir(data_root / "SPair-71k", LABEL)
        self.images = require_dir(base / "JPEGImages", LABEL)
        self.annotations = require_dir(base / "PairAnnotation" / SPLIT, LABEL)
        layout = require_file(base / "Layout" / "large" / f"{SPLIT}.txt", LABEL)
        lines = layout.read_text(encoding="utf-8").splitlines()
        self.pairs = [line.strip() for line in lines if line.strip()]

    def __len__(self) -> int:
        return len(self.pairs)

    def pair(self, index: int) -> KeypointPair:
        """Pair ``index`` with its images loaded."""
        name = self.pairs[index]
        fields = name.split("-")
        if len(fields) < 3:
            raise DatasetFormatError(f"{LABEL}: malformed layout line {name!r}")
        ann = load_json(self.annotations / f"{name}.json", LABEL)
        category = ann["category"]
        x1, y1, x2, y2 = np.asarray(ann["trg_bndbox"], dtype=np.float32)
        source_points = np.asarray(ann["src_kps"], dtype=np.float32).reshape(-1, 2)
        target_points = np.asarray(ann["trg_kps"], dtype=np.float32).reshape(-1, 2)
        if len(source_points) == 0 or len(source_points) != len(target_points):
            raise DatasetFormatError(f"{LABEL}: pair {name} needs as many source as target keypoints (>0)")
        target_name = fields[2].split(":")[0] + ".jpg"
        return KeypointPair(
            index=index,
            name=name,
            category=category,
            target_key=f"{category}/{target_name}",
            source=open_image(self.images / category / f"{fields[1]}.jpg", LABEL),
            target=open_image(self.images / category / target_name, LABEL),
            source_points=source_points,
            target_points=target_points,
            pck_threshold=float(max(x2 - x1, y2 - y1)),
        )
