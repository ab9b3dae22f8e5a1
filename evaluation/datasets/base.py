"""What every loader produces, and the file helpers they share."""

from __future__ import annotations

import glob
import json
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from evaluation.errors import DatasetNotFoundError
from evaluation.sampling import draw, draw_references


@dataclass
class Sample:
    """One image of an episode with its mask at the image's (possibly cropped) resolution."""

    key: str  # the image's identity in its dataset (relative path, id, ...)
    image: Image.Image
    mask: npt.NDArray[Any]  # H x W; nonzero = foreground (raw values for PerMIS)
    instance: str | None = None  # the chosen object, for the part datasets


@dataclass
class Episode:
    """A target to segment, its references and the class the metric books it under."""

    index: int
    class_id: int
    target: Sample
    references: list[Sample]
    ignore: npt.NDArray[np.bool_] | None = None  # target pixels left out of the metric (iSAID)

    @property
    def draw(self) -> tuple[int, str, list[str]]:
        """(class, target key, reference keys): what the random draws decided."""
        return self.class_id, self.target.key, [ref.key for ref in self.references]


class SegmentationDataset(ABC):
    """An episodic benchmark whose episodes are drawn lazily, in index order, from one RNG."""

    name: str  # the ``--dataset`` value
    class_ids: list[int]  # the classes the mIoU averages over
    meter_width: int  # columns of the official intersection/union buffers
    folds: int = 0  # number of folds; 0 when the dataset has none

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def episode(self, index: int, rng: np.random.RandomState) -> Episode:
        """Episode ``index``; call it for 0, 1, 2, ... with the run's single RNG."""


class FileListDataset(SegmentationDataset):
    """A benchmark whose episode is a target and its references drawn from one list of files."""

    shot: int

    @abstractmethod
    def _sample(self, path: Path) -> Sample:
        """The image and mask of one listed file."""

    def _file_episode(self, index: int, class_id: int, pool: list[Path], rng: np.random.RandomState) -> Episode:
        """Target = choice(pool), then the reference loop on the same pool (duplicates allowed)."""
        target = draw(rng, pool)
        refs = list(draw_references(rng, pool, self.shot, lambda p: p == target))
        return Episode(index, class_id, self._sample(target), [self._sample(p) for p in refs])


def missing(path: Path, dataset: str, kind: str, hint: str = "") -> DatasetNotFoundError:
    """The error for a missing folder or file of ``dataset``."""
    extra = f" ({hint})" if hint else ""
    return DatasetNotFoundError(
        f"{dataset}: missing {kind} {path}{extra}; see evaluation/README.md for the expected layout"
    )


def require_dir(path: Path, dataset: str, hint: str = "") -> Path:
    """``path`` if it is a folder, else a clear error naming it."""
    if not path.is_dir():
        raise missing(path, dataset, "folder", hint)
    return path


def require_file(path: Path, dataset: str, hint: str = "") -> Path:
    """``path`` if it is a file, else a clear error naming it."""
    if not path.is_file():
        raise missing(path, dataset, "file", hint)
    return path


def open_image(path: Path, dataset: str, rgb: bool = True) -> Image.Image:
    """A fully loaded PIL image (converted to RGB unless ``rgb`` is false, as for iSAID).

    Its metadata is dropped so that no later step applies an EXIF orientation the official
    loaders never apply (the masks are stored unrotated).
    """
    with Image.open(require_file(path, dataset)) as image:
        image.load()
        loaded = image.convert("RGB") if rgb else image.copy()
    loaded.info.clear()
    return loaded


def read_array(path: Path, dataset: str) -> npt.NDArray[Any]:
    """The pixel values of an image file, without any conversion."""
    with Image.open(require_file(path, dataset)) as image:
        return np.array(image)


def read_binary_mask(path: Path, dataset: str) -> npt.NDArray[np.uint8]:
    """A mask converted to ``L`` and thresholded: >= 128 -> 1, else 0."""
    with Image.open(require_file(path, dataset)) as image:
        gray = np.array(image.convert("L"))
    return (gray >= 128).astype(np.uint8)


def load_json(path: Path, dataset: str) -> Any:
    """A parsed JSON file (key order kept)."""
    with open(require_file(path, dataset), encoding="utf-8") as handle:
        return json.load(handle)


def load_pickle(path: Path, dataset: str) -> Any:
    """An unpickled annotation file (a locally downloaded, trusted dataset file)."""
    with open(require_file(path, dataset), "rb") as handle:
        return pickle.load(handle)


def crop_image(image: Image.Image, rows: slice, cols: slice) -> Image.Image:
    """The image cropped through a numpy array, like the official box crop."""
    return Image.fromarray(np.uint8(np.asarray(image)[rows, cols]))


def sorted_glob(folder: Path) -> list[Path]:
    """``sorted(glob.glob(folder + "/*"))`` as the official loaders list files (no dotfiles)."""
    return [Path(p) for p in sorted(glob.glob(str(Path(glob.escape(str(folder))) / "*")))]


def second_dot_field(name: str) -> str:
    """``a.b.c`` -> ``b`` (the official file filter); empty when the name has no dot."""
    fields = name.split(".")
    return fields[1] if len(fields) > 1 else ""
