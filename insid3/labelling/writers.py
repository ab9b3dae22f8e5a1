"""The output formats, assembled from the journal one image at a time, each file written atomically.

- ``coco``: one COCO instance JSON (``images``, ``annotations`` with compressed RLE, ``categories``).
- ``yolo``: an Ultralytics dataset folder: ``images/`` (links to the images), ``labels/NAME.txt``
  (``class x1 y1 x2 y2 ...`` normalised polygons, one line per polygon) and ``data.yaml``.
- ``png``: ``NAME.png`` per image, a palette PNG whose index is the category id (0: background).
- ``labelstudio``: Label Studio tasks JSON with brush-RLE predictions, plus ``OUT.config.xml``, the
  labelling interface they are made for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from app.labelstudio.brush import mask_to_rle
from app.masks import mask_polygons
from core.artifacts import make_atomic, write_atomic
from insid3.labelling.journal import records

LS_FROM_NAME, LS_TO_NAME = "tag", "image"
DEFAULT_IMAGE_URL = "/data/local-files/?d="


def labelled(journal: Path) -> Iterator[dict[str, Any]]:
    """The journal's labelled images (failed ones left out), each once."""
    return (record for record in records(journal) if "error" not in record)


def decode(annotation: dict[str, Any]) -> np.ndarray:
    """An annotation's mask, (H, W) bool."""
    rle = annotation["rle"]
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def _write_json_array(handle: TextIO, items: Iterator[Any]) -> None:
    """``[item, item, ...]`` streamed, one item at a time."""
    handle.write("[")
    for index, item in enumerate(items):
        handle.write(("," if index else "") + "\n" + json.dumps(item, separators=(",", ":")))
    handle.write("\n]")


def write_coco(out: Path, journal: Path, categories: list[str], _: str) -> None:
    """COCO instance JSON: image ids and annotation ids count from 1 in journal order."""
    def images() -> Iterator[dict[str, Any]]:
        for image_id, record in enumerate(labelled(journal), start=1):
            yield {"id": image_id, "file_name": record["image"], "width": record["width"], "height": record["height"]}

    def annotations() -> Iterator[dict[str, Any]]:
        annotation_id = 0
        for image_id, record in enumerate(labelled(journal), start=1):
            for item in record["annotations"]:
                annotation_id += 1
                yield {"id": annotation_id, "image_id": image_id, "category_id": item["category_id"],
                       "segmentation": item["rle"], "area": item["area"], "bbox": item["bbox"], "iscrowd": 0,
                       "score": item["score"]}

    def make(scratch: Path) -> None:
        with scratch.open("w") as handle:
            handle.write('{"info": {"description": "insid3 label"},\n"images": ')
            _write_json_array(handle, images())
            handle.write(',\n"annotations": ')
            _write_json_array(handle, annotations())
            handle.write(',\n"categories": ')
            _write_json_array(handle, iter([{"id": i, "name": name, "supercategory": name}
                                            for i, name in enumerate(categories, start=1)]))
            handle.write("}\n")

    make_atomic(out, make)


def yolo_lines(record: dict[str, Any]) -> list[str]:
    """``class x1 y1 x2 y2 ...`` per polygon, coordinates divided by the image's width and height."""
    width, height = record["width"], record["height"]
    lines = []
    for item in record["annotations"]:
        for polygon in mask_polygons(decode(item)):
            coords = " ".join(f"{value / (width if i % 2 == 0 else height):.6f}" for i, value in enumerate(polygon))
            lines.append(f"{item['category_id'] - 1} {coords}")
    return lines


def _link_atomic(link: Path, target: Path) -> None:
    """``link`` -> ``target``, replacing any file there in one rename."""
    link.parent.mkdir(parents=True, exist_ok=True)
    scratch = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    scratch.unlink(missing_ok=True)
    os.symlink(target.resolve(), scratch)
    scratch.replace(link)


def write_yolo(out: Path, journal: Path, categories: list[str], _: str) -> None:
    """An Ultralytics dataset: images/ (links), labels/*.txt, data.yaml (train and val: every image)."""
    for record in labelled(journal):
        name = Path(record["image"])
        _link_atomic(out / "images" / name, Path(record["path"]))
        text = "".join(line + "\n" for line in yolo_lines(record))
        write_atomic((out / "labels" / name).with_suffix(".txt"), text.encode())
    names = "".join(f"  {i}: {json.dumps(name)}\n" for i, name in enumerate(categories))
    write_atomic(out / "data.yaml", (f"# written by insid3 label\npath: {json.dumps(str(out.resolve()))}\n"
                                     f"train: images\nval: images\nnames:\n{names}").encode())


def palette() -> list[int]:
    """The PASCAL VOC colour map: index 0 black, then distinct colours."""
    colours = []
    for index in range(256):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours += [r, g, b]
    return colours


def label_image(record: dict[str, Any]) -> np.ndarray:
    """(H, W) uint8 category ids; where categories overlap, the one with the higher score wins."""
    labels = np.zeros((record["height"], record["width"]), dtype=np.uint8)
    for item in sorted(record["annotations"], key=lambda a: a["score"]):
        labels[decode(item)] = item["category_id"]
    return labels


def write_png(out: Path, journal: Path, categories: list[str], _: str) -> None:
    """One palette PNG per image, ``OUT/NAME.png``."""
    colours = palette()
    for record in labelled(journal):
        image = Image.fromarray(label_image(record), mode="P")
        image.putpalette(colours)
        make_atomic((out / record["image"]).with_suffix(".png"), lambda scratch, i=image: i.save(scratch, "PNG"))


def labelstudio_task(record: dict[str, Any], categories: list[str], image_url: str) -> dict[str, Any]:
    """One Label Studio task with its prediction (one brush result per annotation)."""
    results = [{
        "id": f"{index}", "type": "brushlabels", "from_name": LS_FROM_NAME, "to_name": LS_TO_NAME,
        "original_width": record["width"], "original_height": record["height"], "image_rotation": 0,
        "value": {"format": "rle", "rle": [int(v) for v in mask_to_rle(decode(item))],
                  "brushlabels": [categories[item["category_id"] - 1]]},
    } for index, item in enumerate(record["annotations"], start=1)]
    scores = [item["score"] for item in record["annotations"]]
    return {"data": {"image": image_url + record["image"]},
            "predictions": [{"model_version": "insid3", "score": float(np.mean(scores)) if scores else 0.0,
                             "result": results}]}


def labelstudio_config(categories: list[str]) -> str:
    """The labelling interface the tasks' predictions refer to."""
    labels = "".join(f"    <Label value={quoteattr(name)}/>\n" for name in categories)
    return (f'<View>\n  <Image name="{LS_TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="{LS_FROM_NAME}" toName="{LS_TO_NAME}">\n{labels}  </BrushLabels>\n</View>\n')


def write_labelstudio(out: Path, journal: Path, categories: list[str], image_url: str) -> None:
    """Tasks JSON (a list) streamed into ``out``, and the interface into ``OUT.config.xml``."""
    def make(scratch: Path) -> None:
        with scratch.open("w") as handle:
            _write_json_array(handle, (labelstudio_task(r, categories, image_url) for r in labelled(journal)))
            handle.write("\n")

    make_atomic(out, make)
    write_atomic(out.parent / f"{out.stem}.config.xml", labelstudio_config(categories).encode())


WRITERS: dict[str, Callable[[Path, Path, list[str], str], None]] = {
    "coco": write_coco, "yolo": write_yolo, "png": write_png, "labelstudio": write_labelstudio,
}
