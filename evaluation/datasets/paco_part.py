"""PACO-Part: 448 part categories in 4 folds; a random class per episode, crop to the object."""

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
    load_pickle,
    open_image,
    require_dir,
)
from evaluation.datasets.masks import union
from evaluation.errors import DatasetFormatError
from evaluation.sampling import draw, draw_references

LABEL = "PACO-Part"
EPISODES = 2500
N_CLASSES = 448
N_FOLDS = 4
MAX_TRIES = 100_000  # the official loops forever when every draw yields an empty crop


def _dedup(entries: list[dict[Any, str]]) -> list[dict[Any, str]]:
    """The first entry per image id, in the original order."""
    seen: set[Any] = set()
    kept = []
    for entry in entries:
        image_id = next(iter(entry))
        if image_id not in seen:
            seen.add(image_id)
            kept.append(entry)
    return kept


def _short_name(path: str) -> str:
    """``.../val2017/xxx.jpg`` -> ``val2017/xxx.jpg``."""
    return "/".join(path.split("/")[-2:])


class PacoPartDataset(SegmentationDataset):
    """``PACO-Part/paco/paco_part_{train,val}.pkl`` and images under ``PACO-Part/coco``."""

    name = "paco_part"
    folds = N_FOLDS

    def __init__(self, data_root: Path, fold: int, shot: int) -> None:
        base = require_dir(data_root / "PACO-Part", LABEL)
        self.images = require_dir(base / "coco", LABEL, "COCO 2017 images (a link to LVIS/coco)")
        paco = require_dir(base / "paco", LABEL)
        train = load_pickle(paco / "paco_part_train.pkl", LABEL)
        val = load_pickle(paco / "paco_part_val.pkl", LABEL)
        self.shot = shot
        self.cid2img = {cid: _dedup(entries) for cid, entries in val["cid2img"].items()}
        self.img2anno: dict[Any, list[dict[str, Any]]] = val["img2anno"]
        train_ids = list(train["cid2img"])
        if len(train_ids) != N_CLASSES:
            raise DatasetFormatError(
                f"{LABEL}: paco_part_train.pkl has {len(train_ids)} part categories, expected {N_CLASSES}"
            )
        candidates = [train_ids[fold + N_FOLDS * v] for v in range(N_CLASSES // N_FOLDS)]
        self.categories = [c for c in candidates if len(self.cid2img.get(c, [])) > shot]
        if not self.categories:
            raise DatasetFormatError(f"{LABEL}: no category of fold {fold} has more than {shot} images")
        self.position = {cid: i for i, cid in enumerate(self.categories)}
        self.class_ids = list(range(len(self.categories)))
        self.meter_width = N_CLASSES

    def __len__(self) -> int:
        return EPISODES

    def _objects(self, image_id: Any, category: Any) -> dict[Any, list[dict[str, Any]]]:
        """The image's annotations of ``category`` grouped by object, in first-seen order."""
        objects: dict[Any, list[dict[str, Any]]] = {}
        for ann in self.img2anno.get(image_id, []):
            if ann["category_id"] == category:
                objects.setdefault(ann["obj_ann_id"], []).append(ann)
        if not objects:
            raise DatasetFormatError(f"{LABEL}: image {image_id} has no annotation of category {category}")
        return objects

    def _pick(self, rng: np.random.RandomState, entry: dict[Any, str], category: Any) -> tuple[Any, Any]:
        """Draw one object of ``category`` in the image of ``entry``."""
        objects = self._objects(next(iter(entry)), category)
        obj_id = draw(rng, list(objects))
        return obj_id, objects[obj_id]

    def _sample(self, entry: dict[Any, str], obj_id: Any, anns: list[dict[str, Any]]) -> Sample:
        name = _short_name(next(iter(entry.values())))
        image = open_image(self.images / name, LABEL)
        mask: npt.NDArray[np.bool_] = union([a["segmentation"] for a in anns], image.height, image.width)
        x, y, w, h = anns[0]["obj_bbox"]
        rows, cols = slice(int(y), int(y + h)), slice(int(x), int(x + w))
        return Sample(name, crop_image(image, rows, cols), mask[rows, cols], instance=str(obj_id))

    def _try(self, rng: np.random.RandomState) -> tuple[int, Sample, list[Sample]]:
        category = draw(rng, self.categories)
        pool = self.cid2img[category]
        target = draw(rng, pool)
        target_name = _short_name(next(iter(target.values())))
        target_obj = self._pick(rng, target, category)
        refs = []
        for entry in draw_references(
            rng, pool, self.shot, lambda e: _short_name(next(iter(e.values()))) == target_name
        ):
            refs.append((entry, *self._pick(rng, entry, category)))
        return (
            self.position[category],
            self._sample(target, *target_obj),
            [self._sample(*ref) for ref in refs],
        )

    def episode(self, index: int, rng: np.random.RandomState) -> Episode:
        for _ in range(MAX_TRIES):
            class_id, target, references = self._try(rng)
            if all(0 not in s.mask.shape for s in (target, *references)):
                return Episode(index, class_id, target, references)
        raise DatasetFormatError(f"{LABEL}: every try of episode {index} gave an empty crop")
