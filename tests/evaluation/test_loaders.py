"""What the loaders load: masks, crops, ignore maps, keypoints, and clear errors for missing data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from core.images import load_image
from evaluation.datasets import SEGMENTATION, SpairDataset, build_segmentation
from evaluation.datasets.base import open_image
from evaluation.datasets.masks import decode_segmentation
from evaluation.errors import DatasetNotFoundError
from evaluation.sampling import new_rng
from tests.support.images import encode


def episodes(data: Any, name: str, n: int = 8, fold: int = 0, shot: int = 1) -> list[Any]:
    dataset = build_segmentation(name, data.root, fold, shot)
    rng = new_rng(0)
    return [dataset.episode(i, rng) for i in range(n)]


def label(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def test_coco_masks_are_the_class_pixels_only(synthetic: Any) -> None:
    for episode in episodes(synthetic, "coco"):
        for sample in (episode.target, *episode.references):
            values = label(synthetic.root / "COCO2014" / "annotations" / sample.key.replace(".jpg", ".png"))
            assert np.array_equal(sample.mask, values == episode.class_id + 1)
            assert sample.mask.any() and sample.image.size == (48, 32)


def test_isaid_mask_and_ignore_map(synthetic: Any) -> None:
    for episode in episodes(synthetic, "isaid", fold=1):
        values = label(synthetic.root / "iSAID" / "val" / "semantic_png" /
                       f"{episode.target.key}_instance_color_RGB.png")
        assert np.array_equal(episode.target.mask, values == episode.class_id + 1)
        assert np.array_equal(episode.ignore, values == 255) and episode.ignore.any()


def test_pascal_part_mask_is_the_chosen_instance_cropped_to_its_box(synthetic: Any) -> None:
    for episode in episodes(synthetic, "pascal_part", n=12, shot=2):
        part = SEGMENTATION["pascal_part"](synthetic.root, 0, 1).names[episode.class_id].split("+")[1]
        for sample in (episode.target, *episode.references):
            obj = synthetic.pascal_annos[sample.key]["object"][int(sample.instance)]
            rles = [dict(r, counts=r["counts"].encode()) for p in obj["parts"] if p["name"] == part
                    for r in p["mask"]]
            full = mask_util.decode(rles).any(axis=-1)
            box = [int(v) for v in obj["bndbox"].values()]
            assert np.array_equal(sample.mask, full[box[1]:box[3], box[0]:box[2]])
            assert sample.image.size == (sample.mask.shape[1], sample.mask.shape[0])


def test_paco_part_mask_is_the_object_union_cropped(synthetic: Any) -> None:
    for episode in episodes(synthetic, "paco_part", n=12):
        sample = episode.target
        anns = [a for annos in synthetic.paco_val["img2anno"].values() for a in annos
                if a["obj_ann_id"] == int(sample.instance) and a["category_id"] != -1]
        full = np.zeros((32, 48), dtype=bool)
        for ann in anns:
            full |= decode_segmentation(ann["segmentation"], 32, 48)
        x, y, w, h = anns[0]["obj_bbox"]
        assert np.array_equal(sample.mask, full[int(y):int(y + h), int(x):int(x + w)])
        assert 0 not in sample.mask.shape


def test_segmentation_formats_decode_to_the_same_mask() -> None:
    mask = np.zeros((32, 48), dtype=np.uint8)
    mask[5:20, 10:30] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    as_str = {"size": rle["size"], "counts": rle["counts"].decode()}
    flat = mask.flatten(order="F")  # uncompressed RLE: column-major runs, background first
    runs = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()
    as_list = {"size": [32, 48], "counts": runs}
    for segm in (rle, as_str, as_list, mask):
        assert np.array_equal(decode_segmentation(segm, 32, 48), mask.astype(bool))
    polygon = [[10.0, 5.0, 29.0, 5.0, 29.0, 19.0, 10.0, 19.0]]
    expected = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygon, 32, 48))).astype(bool)
    assert np.array_equal(decode_segmentation(polygon, 32, 48), expected)
    assert not decode_segmentation([], 32, 48).any()


def test_lvis_mask_is_the_union_of_the_annotations(synthetic: Any) -> None:
    dataset = build_segmentation("lvis", synthetic.root, 0, 1)
    for episode in episodes(synthetic, "lvis"):
        category = dataset.categories[episode.class_id]
        anns = synthetic.lvis[category][episode.target.key]["annotations"]
        expected = np.zeros((32, 48), dtype=bool)
        for ann in anns:
            expected |= decode_segmentation(ann["segmentation"], 32, 48)
        assert np.array_equal(episode.target.mask, expected)


@pytest.mark.parametrize("name", ["isic", "lung", "suim"])
def test_binary_masks_are_thresholded_at_128(synthetic: Any, name: str) -> None:
    for episode in episodes(synthetic, name):
        for sample in (episode.target, *episode.references):
            assert set(np.unique(sample.mask)) <= {0, 1} and sample.mask.any()


def test_lung_images_of_montgomery_and_shenzhen_masks(synthetic: Any) -> None:
    dataset = build_segmentation("lung", synthetic.root, 0, 1)
    shenzhen = next(p for p in dataset.masks if "CHNCXR" in p.name)
    sample = dataset._sample(shenzhen)
    expected = load_image(synthetic.root / "LungSegmentation" / "CXR_png" / shenzhen.name.replace("_mask", ""))
    assert sample.image.tobytes() == expected.tobytes()


def test_permis_masks_keep_their_raw_values(synthetic: Any) -> None:
    episode = episodes(synthetic, "permis", n=1)[0]
    assert episode.target.mask.dtype == np.int32
    assert set(np.unique(episode.target.mask)) == {0, 2}


def test_spair_pairs(synthetic: Any) -> None:
    dataset = SpairDataset(synthetic.root)
    assert len(dataset) == len(synthetic.spair)
    pair = dataset.pair(1)
    assert pair.name == synthetic.spair[1] and pair.category == "cat"
    assert pair.source_points.shape == pair.target_points.shape == (3, 2)
    import json

    ann = json.loads((synthetic.root / "SPair-71k" / "PairAnnotation" / "test" / f"{pair.name}.json").read_text())
    x1, y1, x2, y2 = ann["trg_bndbox"]
    assert pair.pck_threshold == max(x2 - x1, y2 - y1)


def test_exif_orientation_is_never_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (48, 32))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90
    (tmp_path / "x.jpg").write_bytes(encode(image, "JPEG", exif=exif.tobytes()))
    assert load_image(open_image(tmp_path / "x.jpg", "test")).size == (48, 32)


@pytest.mark.parametrize(
    ("name", "folder"),
    [("coco", "COCO2014"), ("lvis", "LVIS"), ("pascal_part", "VOC2010"), ("paco_part", "PACO-Part"),
     ("isaid", "iSAID"), ("isic", "ISIC"), ("lung", "LungSegmentation"), ("suim", "SUIM"),
     ("permis", "PerMIRS")],
)
def test_missing_dataset_folder_is_named(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(DatasetNotFoundError, match=f"missing folder .*{folder}") as info:
        build_segmentation(name, tmp_path, 0, 1)
    assert "README" in info.value.detail


def test_missing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "COCO2014" / "annotations").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"missing file .*splits/val/fold2\.pkl"):
        build_segmentation("coco", tmp_path, 2, 1)
    (tmp_path / "SPair-71k" / "JPEGImages").mkdir(parents=True)
    (tmp_path / "SPair-71k" / "PairAnnotation" / "test").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"Layout/large/test\.txt"):
        SpairDataset(tmp_path)
