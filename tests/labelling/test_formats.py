"""The output formats, each read back by its own tool's conventions, from one two-category run with
``--instances``: COCO (pycocotools), YOLO-seg (Ultralytics' layout and label lines), palette PNGs,
Label Studio tasks (brush RLE, byte for byte what label_studio_converter writes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw
from pycocotools.coco import COCO

from app.labelstudio.brush import mask_to_rle, rle_to_mask
from insid3.cli import main as insid3
from insid3.labelling import FORMATS
from insid3.labelling.writers import WRITERS, decode, label_image
from tests.labelling.conftest import engine_args, journal_records, make_folder

# label_studio_converter 0.0.59 ``brush.mask2rle`` of the 4x6 mask below and of a 300x300 mask whose
# last 200 rows are set (runs over 2**16 values are split): the format Label Studio imports.
SMALL_MASK = np.zeros((4, 6), dtype=bool)
SMALL_MASK[1:3, 2:5] = True
SMALL_MASK[3, 0] = True
SMALL_RLE = [0, 0, 0, 96, 57, 27, 254, 31, 0, 183, 255, 108, 2, 223, 252, 96, 17, 255, 225, 48, 0]
LARGE_RLE = [0, 5, 126, 64, 57, 27, 255, 255, 255, 0, 250, 151, 224, 31, 255, 255, 255, 255, 255, 255, 255, 255, 255,
             255, 82, 255, 254]


@pytest.fixture(scope="module")
def labelled(tiny_checkpoint, examples, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(images folder, journal, COCO output) of a red + blue run with --instances."""
    root = tmp_path_factory.mktemp("formats")
    folder = make_folder(root, 4, broken=False, blue=True)
    examples_file = root / "examples.json"
    examples_file.write_text(json.dumps({name: [[str(i), str(m)] for i, m in pairs]
                                         for name, pairs in examples.items()}))
    out = root / "labels.json"
    assert insid3(["label", "--examples", str(examples_file), "--images", str(folder), "--out", str(out),
                   "--instances", *engine_args(tiny_checkpoint)]) == 0
    return folder, root / "labels.json.journal.jsonl", out


def test_every_format_has_a_writer() -> None:
    assert tuple(WRITERS) == FORMATS


def test_coco_holds_every_instance_as_rle(labelled) -> None:
    _, journal, out = labelled
    coco = COCO(str(out))
    assert [(c["id"], c["name"]) for c in coco.cats.values()] == [(1, "red"), (2, "blue")]
    records = {r["image"]: r for r in journal_records(journal)}
    assert sorted(i["file_name"] for i in coco.imgs.values()) == sorted(records)
    for annotation in coco.anns.values():
        image = coco.imgs[annotation["image_id"]]
        mask = coco.annToMask(annotation).astype(bool)
        assert mask.shape == (image["height"], image["width"]) and mask.sum() == annotation["area"] > 0
    instances = [a for r in records.values() for a in r["annotations"]]
    assert len(coco.anns) == len(instances) and {a["category_id"] for a in instances} == {1, 2}


def _rasterised(line: str, width: int, height: int) -> tuple[int, np.ndarray, np.ndarray]:
    """A YOLO-seg line as Ultralytics reads it: class, then normalised x y pairs (a polygon); the class,
    the polygon drawn at the image's size and its corners in pixels."""
    values = line.split()
    coords = np.array([float(v) for v in values[1:]]).reshape(-1, 2)
    assert len(coords) >= 3 and ((coords >= 0) & (coords <= 1)).all()
    corners = coords * [width, height]
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([tuple(point) for point in corners], fill=1)
    return int(values[0]), np.asarray(canvas, dtype=bool), corners


def test_yolo_is_an_ultralytics_dataset(labelled, tmp_path) -> None:
    folder, journal, _ = labelled
    out = tmp_path / "yolo"
    WRITERS["yolo"](out, journal, ["red", "blue"], "")
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "red", 1: "blue"} and Path(data["path"]) == out.resolve()
    images = sorted(p for p in (Path(data["path"]) / data["train"]).rglob("*") if not p.is_dir())
    for record in journal_records(journal):
        image = out / "images" / record["image"]
        assert image in images and image.resolve() == (folder / record["image"]).resolve()
        label = Path(str(image).replace("/images/", "/labels/")).with_suffix(".txt")  # Ultralytics' rule
        lines = [_rasterised(line, record["width"], record["height"]) for line in label.read_text().splitlines()]
        for category in range(2):  # each class's polygons cover that category's masks
            drawn = np.zeros((record["height"], record["width"]), dtype=bool)
            corners = [coords for c, _, coords in lines if c == category]
            for c, polygon, _ in lines:
                drawn |= polygon if c == category else False
            truth = drawn & False
            for annotation in record["annotations"]:
                truth |= decode(annotation) if annotation["category_id"] == category + 1 else False
            if not truth.any():
                assert not corners
                continue
            assert (drawn & truth).sum() / (drawn | truth).sum() > 0.8  # PIL fills the polygons' edge pixels too
            rows, cols = np.flatnonzero(truth.any(axis=1)), np.flatnonzero(truth.any(axis=0))
            every = np.concatenate(corners)  # polygons trace pixel edges: corners span the pixels exactly
            assert np.allclose([*every.min(axis=0), *every.max(axis=0)],
                               [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], atol=1e-3)


def test_png_masks_are_palette_images_indexed_by_category(labelled, tmp_path) -> None:
    journal = labelled[1]
    out = tmp_path / "png"
    WRITERS["png"](out, journal, ["red", "blue"], "")
    for record in journal_records(journal):
        with Image.open((out / record["image"]).with_suffix(".png")) as png:
            assert png.mode == "P" and png.size == (record["width"], record["height"])
            assert png.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
            labels = np.asarray(png)
        assert set(np.unique(labels)) <= {0, 1, 2} and np.array_equal(labels, label_image(record))
        for annotation in record["annotations"]:  # every pixel of a category's mask is that category or another
            assert (labels[decode(annotation)] > 0).all()


def test_label_studio_tasks_carry_brush_rle_predictions(labelled, tmp_path) -> None:
    journal = labelled[1]
    out = tmp_path / "tasks.json"
    WRITERS["labelstudio"](out, journal, ["red", "blue"], "/data/local-files/?d=images/")
    tasks = json.loads(out.read_text())
    config = (tmp_path / "tasks.config.xml").read_text()
    assert '<BrushLabels name="tag" toName="image">' in config and '<Label value="blue"/>' in config
    records = journal_records(journal)
    assert len(tasks) == len(records)
    for task, record in zip(tasks, records, strict=True):
        assert task["data"]["image"] == "/data/local-files/?d=images/" + record["image"]
        [prediction] = task["predictions"]
        assert len(prediction["result"]) == len(record["annotations"])
        for result, annotation in zip(prediction["result"], record["annotations"], strict=True):
            assert (result["type"], result["from_name"], result["to_name"]) == ("brushlabels", "tag", "image")
            assert (result["original_width"], result["original_height"]) == (record["width"], record["height"])
            value = result["value"]
            assert value["format"] == "rle"
            assert value["brushlabels"] == [["red", "blue"][annotation["category_id"] - 1]]
            shown = rle_to_mask(value["rle"], record["width"], record["height"])
            assert np.array_equal(shown, decode(annotation))


def test_brush_rle_is_what_label_studio_converter_writes() -> None:
    assert mask_to_rle(SMALL_MASK) == SMALL_RLE
    large = np.zeros((300, 300), dtype=bool)
    large[100:] = True
    assert mask_to_rle(large) == LARGE_RLE
    assert np.array_equal(rle_to_mask(LARGE_RLE, 300, 300), large)
    rng = np.random.default_rng(0)
    for mask in (rng.random((37, 53)) < 0.5, np.zeros((8, 9), bool), np.ones((400, 300), bool)):
        assert np.array_equal(rle_to_mask(mask_to_rle(mask), mask.shape[1], mask.shape[0]), mask)
