"""The loaders draw exactly the official episodes (datasets.md §0.2, §3).

Every ``expected_*`` function is a direct transcription of the official per-dataset draw
procedure, on numpy's *global* legacy state with the literal ``np.random.choice(seq, 1,
replace=False)[0]`` call, written from the spec and the synthetic metadata only (never from the
loader code). The loaders must give the same (class, target, references) sequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from evaluation.datasets import build_segmentation
from evaluation.errors import DatasetFormatError
from evaluation.sampling import draw, draw_references, new_rng, rng_from_json, rng_state_to_json

H, W = 32, 48
N = 14  # episodes compared per dataset and shot
SEED = 3


def choice(seq: Any) -> Any:
    return np.random.choice(seq, 1, replace=False)[0]


def ref_loop(pool: list[Any], target: Any, shot: int) -> list[Any]:
    refs = []
    while True:
        ref = choice(pool)
        if target != ref:
            refs.append(ref)
        if len(refs) == shot:
            return refs


def drawn(data: Any, name: str, fold: int, shot: int, n: int = N) -> list[tuple[int, str, list[str]]]:
    dataset = build_segmentation(name, data.root, fold, shot)
    rng = new_rng(SEED)
    return [dataset.episode(i, rng).draw for i in range(min(n, len(dataset)))]


# ------------------------------------------------------------------------------ the RNG itself


def test_a_draw_consumes_a_whole_permutation() -> None:
    rng = new_rng(0)
    picked = draw(rng, list(range(20)))
    reference = np.random.RandomState(0)
    assert picked == reference.permutation(20)[0]
    assert rng.randint(1 << 30) == reference.randint(1 << 30)


def test_a_draw_from_one_element_consumes_nothing() -> None:
    rng = new_rng(5)
    assert draw(rng, ["only"]) == "only"
    assert rng.randint(1 << 30) == np.random.RandomState(5).randint(1 << 30)


def test_draw_returns_the_element_itself() -> None:
    items = [{"a": 1}, {"b": 2}, {"c": 3}]
    assert draw(new_rng(1), items) is items[int(np.random.RandomState(1).permutation(3)[0])]


def test_rng_state_survives_json() -> None:
    rng = new_rng(7)
    rng.permutation(100)
    restored = rng_from_json(rng_state_to_json(rng))
    assert restored.permutation(50).tolist() == rng.permutation(50).tolist()


def test_reference_loop_keeps_duplicates_and_drops_the_target() -> None:
    np.random.seed(11)
    expected = ref_loop(["a", "b", "c"], "a", 5)
    assert list(draw_references(new_rng(11), ["a", "b", "c"], 5, lambda x: x == "a")) == expected
    assert len(set(expected)) < len(expected)  # duplicates do occur with 5 draws from 2 options


def test_reference_loop_without_any_candidate_is_an_error() -> None:
    with pytest.raises(DatasetFormatError, match="every candidate"):
        list(draw_references(new_rng(0), ["t", "t"], 1, lambda x: x == "t"))


# --------------------------------------------------------------------------------- per dataset


@pytest.mark.parametrize("shot", [1, 2])
@pytest.mark.parametrize("fold", [0, 3])
def test_coco(synthetic: Any, fold: int, shot: int) -> None:
    np.random.seed(SEED)
    class_ids = [fold + 4 * v for v in range(20)]
    expected = []
    for _ in range(N):
        class_sample = choice(class_ids)
        pool = synthetic.coco[class_sample]
        target = choice(pool)
        expected.append((int(class_sample), str(target), [str(r) for r in ref_loop(pool, target, shot)]))
    assert drawn(synthetic, "coco", fold, shot) == expected
    assert len(build_segmentation("coco", synthetic.root, fold, shot)) == 1000


@pytest.mark.parametrize("shot", [1, 2])
@pytest.mark.parametrize("fold", [0, 1])
def test_lvis(synthetic: Any, fold: int, shot: int) -> None:
    kept = [c for c in synthetic.lvis if len(synthetic.lvis[c]) > shot]
    categories = [kept[fold + 10 * v] for v in range(len(kept) // 10)]
    np.random.seed(SEED)
    expected = []
    for idx in range(N):
        position = idx % len(categories)
        keys = list(synthetic.lvis[categories[position]].keys())
        target = choice(keys)
        expected.append((position, str(target), [str(r) for r in ref_loop(keys, target, shot)]))
    assert drawn(synthetic, "lvis", fold, shot) == expected
    dataset = build_segmentation("lvis", synthetic.root, fold, shot)
    assert dataset.class_ids == list(range(len(categories))) and dataset.meter_width == 1203
    assert len(dataset) == 2300


def _pascal_expected(data: Any, fold: int, shot: int) -> tuple[list[Any], list[list[str]], int]:
    group = ["animals", "indoor", "person", "vehicles"][fold]
    objects = data.pascal_index[group]["object"]
    names = []
    for obj in objects:
        for part in objects[obj]["part"]:
            lists = objects[obj]["part"][part]
            if len(lists["train"]) > 0 and len(lists["val"]) > 0 and obj + "+" + part != "aeroplane+TAIL":
                names.append(obj + "+" + part)
    length = min(sum(len(p["val"]) for o in objects.values() for p in o["part"].values()), 2500)

    def valid_draw(image_id: str, obj: str, part: str) -> tuple[bool, str]:
        anno = data.pascal_annos[image_id]
        sel_obj_in_img = [o for o in anno["object"] if o["name"] == obj]
        if len(sel_obj_in_img) == 0:
            return False, ""
        sel_obj = choice(sel_obj_in_img)
        instance = str(next(i for i, o in enumerate(anno["object"]) if o is sel_obj))
        sel_parts = [p for p in sel_obj["parts"] if p["name"] == part]
        if not sel_parts:
            return False, ""
        return sum(len(p["mask"]) for p in sel_parts) > 0, instance

    np.random.seed(SEED)
    expected, instances = [], []
    for idx in range(min(N, length)):
        class_sample = names[idx % len(names)]
        obj_n, part_n = class_sample.split("+")
        val = objects[obj_n]["part"][part_n]["val"]
        while True:
            query = choice(val)
            ok, query_instance = valid_draw(query, obj_n, part_n)
            if ok:
                break
        support_ids: list[str] = []
        support_instances = []
        while len(support_ids) < shot:
            support = choice(val)
            if support == query or support in support_ids:
                continue
            ok, instance = valid_draw(support, obj_n, part_n)
            if ok:
                support_ids.append(str(support))
                support_instances.append(instance)
        expected.append((idx % len(names), str(query), support_ids))
        instances.append([query_instance, *support_instances])
    return expected, instances, length


@pytest.mark.parametrize("shot", [1, 2])
@pytest.mark.parametrize("fold", [0, 1, 2, 3])
def test_pascal_part(synthetic: Any, fold: int, shot: int) -> None:
    expected, instances, length = _pascal_expected(synthetic, fold, shot)
    dataset = build_segmentation("pascal_part", synthetic.root, fold, shot)
    rng = new_rng(SEED)
    episodes = [dataset.episode(i, rng) for i in range(min(N, length))]
    assert [e.draw for e in episodes] == expected
    assert [[s.instance for s in (e.target, *e.references)] for e in episodes] == instances
    assert len(dataset) == length
    assert "aeroplane+TAIL" not in getattr(dataset, "names", [])


def _paco_expected(data: Any, fold: int, shot: int, n: int) -> tuple[list[Any], list[list[str]]]:
    train_ids = list(data.paco_train["cid2img"].keys())
    deduped = {}
    for cid, entries in data.paco_val["cid2img"].items():
        seen: list[Any] = []
        deduped[cid] = []
        for entry in entries:
            image_id = next(iter(entry.keys()))
            if image_id not in seen:
                seen.append(image_id)
                deduped[cid].append(entry)
    test_ids = [c for c in deduped if len(deduped[c]) > shot]
    kept = [c for c in (train_ids[fold + 4 * v] for v in range(112)) if c in test_ids]

    def objects_of(image_id: Any, category: Any) -> dict[Any, list[Any]]:
        groups: dict[Any, list[Any]] = {}
        for anno in data.paco_val["img2anno"][image_id]:
            if anno["category_id"] == category:
                groups.setdefault(anno["obj_ann_id"], []).append(anno)
        return groups

    def empty_crop(box: list[float]) -> bool:
        x, y, w, h = box
        return len(range(H)[int(y):int(y + h)]) == 0 or len(range(W)[int(x):int(x + w)]) == 0

    np.random.seed(SEED)
    expected, instances = [], []
    for _ in range(n):
        while True:
            class_sample = choice(kept)
            target = choice(deduped[class_sample])
            target_id, target_name = next(iter(target.items()))
            target_name = "/".join(target_name.split("/")[-2:])
            groups = objects_of(target_id, class_sample)
            target_obj = choice(list(groups.keys()))
            boxes = [groups[target_obj][0]["obj_bbox"]]
            refs, ref_objs = [], []
            while True:
                ref = choice(deduped[class_sample])
                ref_id, ref_name = next(iter(ref.items()))
                ref_name = "/".join(ref_name.split("/")[-2:])
                if target_name != ref_name:
                    ref_groups = objects_of(ref_id, class_sample)
                    ref_obj = choice(list(ref_groups.keys()))
                    refs.append(ref_name)
                    ref_objs.append(str(ref_obj))
                    boxes.append(ref_groups[ref_obj][0]["obj_bbox"])
                if len(refs) == shot:
                    break
            if not any(empty_crop(box) for box in boxes):
                break
        expected.append((kept.index(class_sample), target_name, refs))
        instances.append([str(target_obj), *ref_objs])
    return expected, instances


@pytest.mark.parametrize("shot", [1, 2])
def test_paco_part(synthetic: Any, shot: int) -> None:
    n = 40
    expected, instances = _paco_expected(synthetic, 0, shot, n)
    dataset = build_segmentation("paco_part", synthetic.root, 0, shot)
    rng = new_rng(SEED)
    episodes = [dataset.episode(i, rng) for i in range(n)]
    assert [e.draw for e in episodes] == expected
    assert [[s.instance for s in (e.target, *e.references)] for e in episodes] == instances
    assert len(dataset) == 2500 and dataset.meter_width == 448


@pytest.mark.parametrize("shot", [1, 3])
@pytest.mark.parametrize("fold", [0, 2])
def test_isaid(synthetic: Any, fold: int, shot: int) -> None:
    metadata = [[line.split("__")[0], int(line.split("__")[1]) - 1] for line in synthetic.isaid_lines[fold]]
    classwise: dict[int, list[str]] = {c: [] for c in range(15)}
    for name, class_id in metadata:
        classwise[class_id] += [name]
    np.random.seed(SEED)
    expected = []
    for idx in range(N):
        target, class_sample = metadata[idx]
        expected.append((class_sample, target, [str(r) for r in ref_loop(classwise[class_sample], target, shot)]))
    assert drawn(synthetic, "isaid", fold, shot) == expected
    dataset = build_segmentation("isaid", synthetic.root, fold, shot)
    assert len(dataset) == len(metadata) and dataset.class_ids == list(range(5 * fold, 5 * fold + 5))


@pytest.mark.parametrize("shot", [1, 2])
def test_isic(synthetic: Any, shot: int) -> None:
    np.random.seed(SEED)
    expected = []
    for idx in range(N):
        category = ["1", "2", "3"][idx % 3]
        pool = [f"{category}/{name}" for name in synthetic.isic[category]]
        target = choice(pool)
        expected.append((idx % 3, str(target), [str(r) for r in ref_loop(pool, target, shot)]))
    assert drawn(synthetic, "isic", 0, shot) == expected
    assert len(build_segmentation("isic", synthetic.root, 0, shot)) == 600


@pytest.mark.parametrize("shot", [1, 2])
def test_lung(synthetic: Any, shot: int) -> None:
    np.random.seed(SEED)
    expected = []
    for _ in range(N):
        target = choice(synthetic.lung)
        expected.append((0, str(target), [str(r) for r in ref_loop(synthetic.lung, target, shot)]))
    assert drawn(synthetic, "lung", 0, shot) == expected
    dataset = build_segmentation("lung", synthetic.root, 0, shot)
    assert (len(dataset), dataset.class_ids, dataset.meter_width) == (600, [0], 2)


@pytest.mark.parametrize("shot", [1, 2])
def test_suim(synthetic: Any, shot: int) -> None:
    categories = ["FV", "HD", "PF", "RI", "RO", "SR", "WR"]
    np.random.seed(SEED)
    expected = []
    for idx in range(N):
        category = categories[idx % 7]
        pool = [f"{category}/{name}" for name in synthetic.suim[category]]
        target = choice(pool)
        expected.append((idx % 7, str(target), [str(r) for r in ref_loop(pool, target, shot)]))
    assert drawn(synthetic, "suim", 0, shot) == expected
    assert len(build_segmentation("suim", synthetic.root, 0, shot)) == sum(map(len, synthetic.suim.values()))


def test_permis(synthetic: Any) -> None:
    videos = sorted(synthetic.permis)
    expected = [(0, f"{v}/{frame}.jpg", [f"{v}/0.jpg"]) for v in videos for frame in (1, 2)]
    assert drawn(synthetic, "permis", 0, 5) == expected  # --shots is ignored
