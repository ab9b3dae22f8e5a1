"""What a labelling job reads: the images to label (a folder or a glob, in a stable order) and the
examples (image + mask pairs per category), checked before any model is loaded."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from core.errors import InvalidInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
DEFAULT_CATEGORY = "object"
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Target:
    """One image to label: its path, and its name in the output (relative to the folder or glob root)."""

    path: Path
    name: str


@dataclass(frozen=True)
class Example:
    """A reference image and its mask."""

    image: Path
    mask: Path

    def digest(self) -> str:
        """sha256 of the image and mask bytes (what identifies the example in the journal)."""
        digest = hashlib.sha256()
        for path in (self.image, self.mask):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


def list_images(spec: str, exclude: Path | None = None) -> list[Target]:
    """The images of a folder (recursively, by suffix) or of a glob pattern, sorted by name;
    anything under ``exclude`` (the output) is left out. No image found is an error."""
    folder = Path(spec)
    if folder.is_dir():
        root, paths = folder, [Path(d) / f for d, _, files in os.walk(folder) for f in files
                               if f.lower().endswith(IMAGE_SUFFIXES)]
    elif glob.has_magic(spec):
        root, paths = _glob_root(spec), [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
    else:
        raise InvalidInputError(f"--images {spec}: no such folder (give a folder or a glob like 'photos/*.jpg')")
    excluded = exclude.resolve() if exclude is not None else None
    targets = sorted((Target(p, p.relative_to(root).as_posix()) for p in paths
                      if excluded is None or not p.resolve().is_relative_to(excluded)), key=lambda t: t.name)
    if not targets:
        looked = f"files ending {', '.join(IMAGE_SUFFIXES)}" if folder.is_dir() else "files matching it"
        raise InvalidInputError(f"--images {spec}: no images found (looked for {looked})")
    return targets


def _glob_root(pattern: str) -> Path:
    """The folder above the first part of ``pattern`` with a wildcard."""
    parts = Path(pattern).parts
    fixed = parts[:next(i for i, p in enumerate(parts) if glob.has_magic(p))]
    return Path(*fixed) if fixed else Path(".")


def _oriented_size(path: Path, what: str) -> tuple[int, int]:
    """(width, height) of an image as the engine sees it (EXIF orientation applied), from its header."""
    if not path.is_file():
        raise InvalidInputError(f"{what} {path}: no such file")
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION)
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInputError(f"{what} {path}: not a readable image ({exc})") from None
    if orientation in (5, 6, 7, 8):  # rotated by a quarter turn
        width, height = height, width
    return width, height


def check_example(example: Example) -> None:
    """Both files exist and are images, and the mask has its image's size: else a one-line error."""
    image_size = _oriented_size(example.image, "reference image")
    mask_size = _oriented_size(example.mask, "reference mask")
    if image_size != mask_size:
        raise InvalidInputError(
            f"reference mask {example.mask} is {mask_size[0]}x{mask_size[1]} but its image {example.image} is "
            f"{image_size[0]}x{image_size[1]}: a mask must have its image's size")


def collect_examples(pairs: list[list[str]] | None, examples_file: Path | None,
                     category: str | None) -> dict[str, list[Example]]:
    """Examples per category from ``--reference IMG MASK`` pairs (one category, ``--category``) and/or
    an ``--examples`` JSON file ``{category: [[image, mask], ...]}``, each checked."""
    categories: dict[str, list[Example]] = {}
    if pairs:
        categories[category or DEFAULT_CATEGORY] = [Example(Path(image), Path(mask)) for image, mask in pairs]
    if examples_file is not None:
        for name, items in _read_examples(examples_file).items():
            categories.setdefault(name, []).extend(items)
    if not categories:
        raise InvalidInputError("give at least one --reference IMAGE MASK, or --examples FILE")
    for items in categories.values():
        for example in items:
            check_example(example)
    return categories


def _read_examples(path: Path) -> dict[str, list[Example]]:
    """``{category: [[image, mask], ...]}``; relative paths are relative to the file's folder."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"--examples {path}: not a readable JSON file ({exc})") from None
    if not isinstance(value, dict) or not value or not all(
        isinstance(items, list) and items and all(isinstance(p, list) and len(p) == 2 for p in items)
        for items in value.values()
    ):
        raise InvalidInputError(f'--examples {path}: expected {{"category": [["image", "mask"], ...], ...}}')
    return {str(name): [Example(path.parent / image, path.parent / mask) for image, mask in items]
            for name, items in value.items()}
