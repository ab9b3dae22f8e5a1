"""Pascal-Part: object parts of one VOC group per fold, cropped to the chosen object's box."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from evaluation.datasets.base import (
    Episode,
    Sample,
    SegmentationDataset,
    crop_image,
    load_json,
    open_image,
    require_dir,
)
from evaluation.datasets.masks import decode_rles
from evaluation.errors import DatasetFormatError
from evaluation.sampling import draw

LABEL = "Pascal-Part"
MAX_EPISODES = 2500
GROUPS = ("animals", "indoor", "person", "vehicles")
EXCLUDED = "aeroplane+TAIL"
MAX_REJECTIONS = 100_000  # the official loops forever on a class without a usable image


class PascalPartDataset(SegmentationDataset):
    """``Pascal-Part/VOCdevkit/VOC2010``: JPEGImages, the part index and per-image part JSONs."""

    name = "pascal_part"
    folds = len(GROUPS)

    def __init__(self, data_root: Path, fold: int, shot: int) -> None:
        voc = require_dir(data_root / "Pascal-Part" / "VOCdevkit" / "VOC2010", LABEL)
        self.images = require_dir(voc / "JPEGImages", LABEL)
        self.parts = require_dir(voc / "Annotations_Part_json_merged_part_classes", LABEL)
        self.shot = shot
        objects = load_json(voc / "all_obj_part_to_image.json", LABEL)[GROUPS[fold]]["object"]
        self.names: list[str] = []
        self.val_ids: dict[str, list[str]] = {}
        n_episodes = 0
        for obj, obj_info in objects.items():
            for part, lists in obj_info["part"].items():
                n_episodes += len(lists["val"])
                name = f"{obj}+{part}"
                if lists["train"] and lists["val"] and name != EXCLUDED:
                    self.names.append(name)
                    self.val_ids[name] = list(lists["val"])
        if not self.names:
            raise DatasetFormatError(f"{LABEL}: group {GROUPS[fold]!r} has no part with train and val images")
        self.n_episodes = min(n_episodes, MAX_EPISODES)
        self.class_ids = list(range(len(self.names)))
        self.meter_width = len(self.names)

    def __len__(self) -> int:
        return self.n_episodes

    def _try(
        self, rng: np.random.RandomState, image_id: str, obj: str, part: str
    ) -> tuple[npt.NDArray[np.bool_], list[int], int] | None:
        """Object choice, part filter and decoding for one drawn image (None: rejected)."""
        objects = load_json(self.parts / f"{image_id}.json", LABEL)["object"]
        candidates = [i for i, o in enumerate(objects) if o["name"] == obj]
        if not candidates:
            return None
        chosen = draw(rng, candidates)
        rles: list[dict[str, Any]] = []
        for p in objects[chosen]["parts"]:
            if p["name"] == part:
                rles.extend(p["mask"])
        mask = decode_rles(rles)
        if mask is None or mask.size == 0:
            return None
        box = [int(value) for value in objects[chosen]["bndbox"].values()]
        return mask, box, chosen

    def _sample(self, image_id: str, mask: npt.NDArray[np.bool_], box: list[int], chosen: int) -> Sample:
        rows, cols = slice(box[1], box[3]), slice(box[0], box[2])
        image = crop_image(open_image(self.images / f"{image_id}.jpg", LABEL), rows, cols)
        return Sample(image_id, image, mask[rows, cols].astype(np.float32), instance=str(chosen))

    def _draw_valid(
        self, rng: np.random.RandomState, name: str, excluded: list[str]
    ) -> tuple[str, tuple[npt.NDArray[np.bool_], list[int], int]]:
        obj, part = name.split("+", 1)
        for _ in range(MAX_REJECTIONS):
            image_id = draw(rng, self.val_ids[name])
            if image_id in excluded:
                continue
            found = self._try(rng, image_id, obj, part)
            if found is not None:
                return image_id, found
        raise DatasetFormatError(f"{LABEL}: no usable image left to draw for {name}")

    def episode(self, index: int, rng: np.random.RandomState) -> Episode:
        class_id = index % len(self.names)
        name = self.names[class_id]
        target_id, target = self._draw_valid(rng, name, [])
        drawn: list[str] = []
        references = []
        while len(drawn) < self.shot:
            ref_id, found = self._draw_valid(rng, name, [target_id, *drawn])
            drawn.append(ref_id)
            references.append(self._sample(ref_id, *found))
        return Episode(index, class_id, self._sample(target_id, *target), references)
