"""Tiny synthetic copies of every benchmark layout (datasets.md §3), built once per session.

Each builder writes its files under one data root and returns the metadata it wrote (lists,
annotation dicts, ...) so that tests can replay the official draw procedure on their own.
Images are 48 x 32 (W x H) unless said otherwise.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

W, H = 48, 32


def _image(path: Path, rng: np.random.RandomState, size: tuple[int, int] = (W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _gray(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def _box_mask(rng: np.random.RandomState, height: int = H, width: int = W) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    top, left = rng.randint(0, height // 2), rng.randint(0, width // 2)
    mask[top:top + rng.randint(4, height // 2), left:left + rng.randint(4, width // 2)] = True
    return mask


def _rle_str(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major runs, starting with background)."""
    counts, current, run = [], 0, 0
    for value in mask.flatten(order="F").astype(int):
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    return [*counts, run]


def _dump(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(value, handle)


@dataclass
class SyntheticData:
    """The data root and, per dataset, what the builder wrote."""

    root: Path
    coco: dict[int, list[str]] = field(default_factory=dict)  # class -> image paths (all folds)
    lvis: dict[int, dict[str, Any]] = field(default_factory=dict)
    pascal_index: dict[str, Any] = field(default_factory=dict)
    pascal_annos: dict[str, Any] = field(default_factory=dict)  # image id -> per-image JSON
    paco_train: dict[str, Any] = field(default_factory=dict)
    paco_val: dict[str, Any] = field(default_factory=dict)
    isaid_lines: dict[int, list[str]] = field(default_factory=dict)  # fold -> lines
    isic: dict[str, list[str]] = field(default_factory=dict)  # category -> file names (sorted)
    lung: list[str] = field(default_factory=list)  # mask file names (sorted)
    suim: dict[str, list[str]] = field(default_factory=dict)  # category -> non-empty mask names
    permis: list[str] = field(default_factory=list)  # video folder names
    spair: list[str] = field(default_factory=list)  # layout lines


def build_coco(data: SyntheticData, rng: np.random.RandomState) -> None:
    base = data.root / "COCO2014"
    names = [f"val2014/COCO_val2014_{i:012d}.jpg" for i in range(24)]
    labels = {name: np.zeros((H, W), dtype=np.uint8) for name in names}
    free = {name: [(r, c) for r in range(4) for c in range(6)] for name in names}
    for class_id in range(80):
        order = rng.permutation(len(names))
        chosen = [names[i] for i in order if free[names[i]]][: 2 + class_id % 3]
        for name in chosen:
            r, c = free[name].pop(rng.randint(len(free[name])))
            labels[name][8 * r:8 * r + 6, 8 * c:8 * c + 6] = class_id + 1
        data.coco[class_id] = chosen
    for name in names:
        labels[name][7, :] = 255  # boundary pixels: background for every class
        _image(base / name, rng)
        _gray(base / "annotations" / name.replace(".jpg", ".png"), labels[name])
    for fold in range(4):
        _dump(base / "splits" / "val" / f"fold{fold}.pkl", dict(data.coco))


def build_lvis(data: SyntheticData, rng: np.random.RandomState) -> None:
    base = data.root / "LVIS"
    names = [f"val2017/{i:012d}.jpg" for i in range(20)] + [f"train2017/{i:012d}.jpg" for i in range(20, 26)]
    for name in names:
        _image(base / "coco" / name, rng)
    kinds = ("polygon", "rle_bytes", "rle_str", "rle_list", "array", "empty_polygon")
    category_ids = [int(c) for c in rng.permutation(np.arange(1, 200))[:24]]  # not sorted: order matters
    for k, category in enumerate(category_ids):
        count = 1 if k % 7 == 3 else (2 if k % 5 == 1 else 3 + k % 3)
        images = {}
        for name in (names[i] for i in rng.permutation(len(names))[:count]):
            annotations = []
            for a in range(1 + (k + len(images)) % 2):
                mask = _box_mask(rng)
                kind = kinds[(k + a + len(images)) % len(kinds)]
                if kind == "polygon":
                    ys, xs = np.nonzero(mask)
                    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
                    segm: Any = [[float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]]
                elif kind == "rle_bytes":
                    segm = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                elif kind == "rle_str":
                    segm = _rle_str(mask)
                elif kind == "rle_list":
                    segm = {"size": [H, W], "counts": _runs(mask)}
                elif kind == "array":
                    segm = mask.astype(np.uint8)
                else:
                    segm = []
                annotations.append({"segmentation": segm, "category_id": category})
            images[name] = {"annotations": annotations}
        data.lvis[category] = images
    _dump(base / "lvis_val.pkl", data.lvis)
    _dump(base / "lvis_train.pkl", {})


PASCAL_GROUPS = {
    "animals": {"cat": ["HEAD", "TAIL", "LEG"], "dog": ["HEAD", "NOSE"]},
    "indoor": {"chair": ["SEAT", "LEG"], "sofa": ["BACK"]},
    "person": {"person": ["HEAD", "HAND", "TORSO"]},
    "vehicles": {"aeroplane": ["TAIL", "WING", "BODY"], "car": ["WHEEL", "DOOR"]},
}


def build_pascal(data: SyntheticData, rng: np.random.RandomState) -> None:
    voc = data.root / "Pascal-Part" / "VOCdevkit" / "VOC2010"
    ids = [f"2008_{i:06d}" for i in range(36)]
    annos: dict[str, Any] = {image_id: {"object": []} for image_id in ids}
    index: dict[str, Any] = {}
    for g, (group, objects) in enumerate(PASCAL_GROUPS.items()):
        index[group] = {"object": {}}
        for obj, parts in objects.items():
            index[group]["object"][obj] = {"part": {}}
            for p, part in enumerate(parts):
                val = [ids[i] for i in rng.permutation(len(ids))[:6]]
                if p == 0:
                    val.append(val[0])  # duplicated id (kept by the official)
                train = [] if (g, p) == (1, 1) else ["2009_000001"]  # chair+LEG: no train image
                index[group]["object"][obj]["part"][part] = {"train": train, "val": val}
                for v, image_id in enumerate(val):
                    if v == 5:
                        continue  # listed, but the image has no such object: a redraw
                    objects_here = annos[image_id]["object"]
                    same = [o for o in objects_here if o["name"] == obj]
                    if not same or v % 3 == 0:  # a second instance now and then
                        x0, y0 = int(rng.randint(0, W // 3)), int(rng.randint(0, H // 3))
                        x1, y1 = int(x0 + rng.randint(8, W // 2)), int(y0 + rng.randint(8, H // 2))
                        new = {"name": obj, "bndbox": {"xmin": str(x0), "ymin": y0, "xmax": x1, "ymax": y1},
                               "parts": []}
                        objects_here.append(new)
                        same.append(new)
                    for o, instance in enumerate(same):
                        if v == 4 and o == 0:
                            continue  # the first instance lacks the part: a redraw when drawn
                        rles = [] if (v == 3 and o == 1) else [_rle_str(_box_mask(rng)) for _ in range(1 + v % 2)]
                        instance["parts"].append({"name": part, "mask": rles})
    for image_id in ids:
        _image(voc / "JPEGImages" / f"{image_id}.jpg", rng)
        path = voc / "Annotations_Part_json_merged_part_classes" / f"{image_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(annos[image_id]))
    (voc / "all_obj_part_to_image.json").write_text(json.dumps(index))
    data.pascal_index, data.pascal_annos = index, annos


def build_paco(data: SyntheticData, rng: np.random.RandomState) -> None:
    base = data.root / "PACO-Part"
    train_ids = [int(c) for c in rng.permutation(np.arange(5000, 5448))]
    names = [f"val2017/{i:012d}.jpg" for i in range(30)]
    for name in names:
        _image(base / "coco" / name, rng)
    cid2img: dict[int, list[dict[int, str]]] = {}
    img2anno: dict[int, list[dict[str, Any]]] = {}
    next_obj = 900
    for k, category in enumerate(train_ids[0:40:4]):  # fold-0 candidates T[0], T[4], ...
        count = 1 if k == 2 else 3 + k % 3
        entries = []
        for i in rng.permutation(len(names))[:count]:
            image_id = 100 + int(i)
            entries.append({image_id: f"/data/coco/{names[i]}"})
            for _ in range(1 + k % 2):  # one or two objects with this part
                next_obj += 1
                x, y = float(rng.randint(0, W // 2)), float(rng.randint(0, H // 2))
                width = 0.2 if (k == 4 and i % 2 == 0) else float(rng.randint(6, W // 2))  # empty crop
                for _ in range(1 + next_obj % 2):  # one or two segments of the part
                    img2anno.setdefault(image_id, []).append({
                        "category_id": category, "obj_ann_id": next_obj,
                        "obj_bbox": [x + 0.7, y + 0.2, width, float(rng.randint(6, H // 2))],
                        "segmentation": _rle_str(_box_mask(rng)) if next_obj % 3 else
                        [[float(x), float(y), float(x + 10), float(y), float(x + 10), float(y + 8)]],
                    })
                img2anno[image_id].append({"category_id": -1, "obj_ann_id": 1, "obj_bbox": [0, 0, 4, 4],
                                           "segmentation": []})
        entries.append(dict(entries[0]))  # duplicate image id: dropped by the dedup
        cid2img[category] = entries
    data.paco_train = {"cid2img": {c: [] for c in train_ids}, "img2anno": {}}
    data.paco_val = {"cid2img": cid2img, "img2anno": img2anno}
    _dump(base / "paco" / "paco_part_train.pkl", data.paco_train)
    _dump(base / "paco" / "paco_part_val.pkl", data.paco_val)


def build_isaid(data: SyntheticData, rng: np.random.RandomState) -> None:
    base = data.root / "iSAID"
    size = (32, 32)
    for fold in range(3):
        lines = []
        for class_id in range(5 * fold, 5 * fold + 5):
            for j in range(3 + class_id % 2):
                name = f"P{class_id:04d}_{j}"
                label = np.zeros(size, dtype=np.uint8)
                label[2:12, 3:20] = class_id + 1
                label[20:24, :] = (class_id + 1) % 15 + 1  # another class: background here
                label[28:, 20:] = 255  # ignore
                _gray(base / "val" / "semantic_png" / f"{name}_instance_color_RGB.png", label)
                _image(base / "val" / "images" / f"{name}.png", rng, size)
                lines.append(f"{name}__{class_id + 1}")
        order = rng.permutation(len(lines))
        data.isaid_lines[fold] = [lines[i] for i in order]
        path = base / "splits" / "val" / f"fold{fold}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(data.isaid_lines[fold]) + "\n")


def build_isic(data: SyntheticData, rng: np.random.RandomState) -> None:
    base = data.root / "ISIC"
    number = 24306
    for category in ("1", "2", "3"):
        folder = base / "ISIC2018_Task1-2_Training_Input" / category
        names = []
        for _ in range(3 + int(category)):
            number += int(rng.randint(1, 9))
            names.append(f"ISIC_{number:07d}.jpg")
            _image(folder / names[-1], rng)
            _gray(base / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_{number:07d}_segmentation.png",
                  _box_mask(rng) * rng.randint(128, 256))
        (folder / "ATTRIBUTION.txt").write_text("not an image")
        data.isic[category] = sorted(names)


def build_lung(data: SyntheticData, rng: np.random.RandomState) -> None:
    base = data.root / "LungSegmentation"
    for i in range(4):
        for stem, mask_name in ((f"MCUCXR_{i:04d}_0", f"MCUCXR_{i:04d}_0.png"),
                                (f"CHNCXR_{i:04d}_1", f"CHNCXR_{i:04d}_1_mask.png")):
            _image(base / "CXR_png" / f"{stem}.png", rng)
            _gray(base / "masks" / mask_name, _box_mask(rng) * 255)
            data.lung.append(mask_name)
    _image(base / "CXR_png" / "CHNCXR_9999_0.png", rng)  # an image without a mask
    (base / "masks" / "Thumbs.db").write_text("junk")
    data.lung.sort()


def build_suim(data: SyntheticData, rng: np.random.RandomState) -> None:
    base = data.root / "SUIM"
    stems = [f"d_r_{i}_" for i in range(12)]
    for stem in stems:
        _image(base / "images" / f"{stem}.jpg", rng)
    for c, category in enumerate(("FV", "HD", "PF", "RI", "RO", "SR", "WR")):
        kept = []
        for j, i in enumerate(rng.permutation(len(stems))[:4 + c % 2]):
            empty = j == 1  # an all-black mask: dropped
            mask = np.zeros((H, W), dtype=np.uint8) if empty else _box_mask(rng) * 255
            mask[0, 0] = 100  # below 128: background
            name = f"{stems[i]}.bmp"
            _gray(base / "masks" / category / name, mask)
            if not empty:
                kept.append(name)
        data.suim[category] = sorted(kept)


def build_permis(data: SyntheticData, rng: np.random.RandomState) -> None:
    base = data.root / "PerMIRS"
    for video in ("12", "4", "5"):
        frames = []
        for frame in range(3):
            _image(base / video / f"{frame}.jpg", rng)
            frames.append({7: _box_mask(rng).astype(np.int64) * 2, 9: np.ones((H, W), dtype=np.int64)})
        np.save(base / video / "masks.npz", np.array(frames, dtype=object), allow_pickle=True)
        data.permis.append(video)


def build_spair(data: SyntheticData, rng: np.random.RandomState) -> None:
    base = data.root / "SPair-71k"
    lines = []
    for category in ("cat", "aeroplane"):
        stems = [f"2008_00{category[:1]}{i:03d}" for i in range(3)]
        for stem in stems:
            _image(base / "JPEGImages" / category / f"{stem}.jpg", rng)
        for n, (src, trg) in enumerate(((0, 1), (1, 2), (0, 2), (2, 0))):
            name = f"{len(lines)}-{stems[src]}-{stems[trg]}:{category}"
            count = 2 + n
            ann = {
                "category": category,
                "src_kps": [[float(rng.randint(W)), float(rng.randint(H))] for _ in range(count)],
                "trg_kps": [[float(rng.randint(W)), float(rng.randint(H))] for _ in range(count)],
                "trg_bndbox": [2, 3, 2 + int(rng.randint(10, W - 2)), 3 + int(rng.randint(10, H - 3))],
            }
            path = base / "PairAnnotation" / "test" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ann))
            lines.append(name)
    layout = base / "Layout" / "large" / "test.txt"
    layout.parent.mkdir(parents=True, exist_ok=True)
    layout.write_text("\n".join(f"{line}  " for line in lines) + "\n\n")
    data.spair = lines


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticData:
    """Every benchmark in its official layout under one data root."""
    data = SyntheticData(tmp_path_factory.mktemp("eval-data"))
    rng = np.random.RandomState(1234)
    for builder in (build_coco, build_lvis, build_pascal, build_paco, build_isaid, build_isic,
                    build_lung, build_suim, build_permis, build_spair):
        builder(data, rng)
    return data


@pytest.fixture
def basis_cache(basis_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Keep the engine's positional-basis cache in the session's temporary one (computed once)."""
    monkeypatch.setenv("INSID3_BASIS_CACHE_DIR", str(basis_cache_dir))
    yield basis_cache_dir
