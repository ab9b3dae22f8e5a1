"""The official metrics on hand-made predictions with hand-computed values (datasets.md §2, §3.10)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import IouMeter, PckMeter, episode_areas, pair_pck, resize_to_prediction


def grid(rows: list[str]) -> np.ndarray:
    return np.array([[c == "1" for c in row] for row in rows])


PRED = grid(["1100", "1100", "0000", "0011"])
GT = grid(["1110", "1000", "0000", "0000"])


def test_episode_areas_by_hand() -> None:
    inter, union = episode_areas(PRED, GT)
    # foreground: pred 6, gt 4, both 3 -> inter 3, union 7; background: pred 10, gt 12, both 9
    assert inter.tolist() == [9, 3]
    assert union.tolist() == [13, 7]


def test_ignore_pixels_are_left_out_of_every_count() -> None:
    ignore = grid(["0000", "0000", "0000", "0011"])  # exactly the two false-positive pixels
    inter, union = episode_areas(PRED, GT, ignore)
    assert inter.tolist() == [9, 3]
    assert union.tolist() == [11, 5]


def test_ignore_overlapping_the_foreground_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        episode_areas(PRED, GT, grid(["1000", "0000", "0000", "0000"]))


def test_no_agreeing_pixel_gives_zero_intersection() -> None:
    pred = grid(["10", "01"])
    inter, union = episode_areas(pred, ~pred)
    assert inter.tolist() == [0, 0]
    assert union.tolist() == [4, 4]


def test_miou_sums_counts_per_class_and_absent_classes_count_zero() -> None:
    meter = IouMeter(width=6, class_ids=[1, 3, 5])
    meter.update(np.array([10, 3]), np.array([12, 4]), 1)
    meter.update(np.array([5, 1]), np.array([9, 4]), 1)  # class 1: 4/8 (not the mean of 3/4 and 1/4)
    meter.update(np.array([7, 0]), np.array([8, 2]), 3)  # class 3: 0
    meter.update(np.array([100, 100]), np.array([100, 100]), 4)  # not evaluated
    # class 5 never occurs: 0
    assert meter.class_iou() == {1: 50.0, 3: 0.0, 5: 0.0}
    assert meter.miou() == pytest.approx(50.0 / 3)
    # FB-IoU over the evaluated classes: background 22/29, foreground 4/10
    assert meter.fb_iou() == pytest.approx(100 * (22 / 29 + 4 / 10) / 2, rel=1e-6)


def test_union_of_zero_is_clamped_for_miou_but_not_fb_iou() -> None:
    meter = IouMeter(width=2, class_ids=[0])
    assert meter.miou() == 0.0
    assert math.isnan(meter.fb_iou())


def test_buffers_accumulate_in_float32_like_the_official() -> None:
    meter = IouMeter(width=1, class_ids=[0])
    meter.update(np.array([0, 2**24]), np.array([0, 2**24]), 0)
    meter.update(np.array([0, 1]), np.array([0, 1]), 0)
    assert float(meter.union[1, 0]) == 2**24  # float32 cannot hold 2**24 + 1


def test_ground_truth_is_resized_with_legacy_nearest() -> None:
    mask = np.arange(25, dtype=np.float32).reshape(5, 5)
    # legacy nearest: source index floor(dst * 5 / 2) = 0, 2; then > 0.5
    assert resize_to_prediction(mask, 2).tolist() == [[False, True], [True, True]]
    up = resize_to_prediction(np.array([[0, 1], [1, 0]]), 4)
    assert up.tolist() == [[False, False, True, True]] * 2 + [[True, True, False, False]] * 2
    assert resize_to_prediction(np.array([[0.4, 2]]), 2).tolist() == [[False, True]] * 2


def test_pck_per_pair_by_hand() -> None:
    truth = np.zeros((5, 2))
    predicted = np.array([[4, 0], [0, 5.1], [6, 8], [9, 12], [15, 20]])  # distances 4, 5.1, 10, 15, 25
    assert pair_pck(predicted, truth, threshold=100) == pytest.approx([0.2, 0.6, 0.8, 0.8])


def test_pck_is_the_mean_over_pairs_not_over_categories() -> None:
    meter = PckMeter()
    meter.update([1.0, 1.0, 1.0, 1.0], "cat")
    meter.update([0.0, 0.5, 1.0, 1.0], "cat")
    meter.update([0.0, 0.0, 0.0, 1.0], "dog")
    assert meter.result() == pytest.approx({"0.05": 100 / 3, "0.10": 50.0, "0.15": 200 / 3, "0.20": 100.0})
    assert meter.per_category()["cat"] == pytest.approx({"0.05": 50.0, "0.10": 75.0, "0.15": 100.0, "0.20": 100.0})
    assert meter.per_category()["dog"]["0.20"] == 100.0


def test_pck_boundary_points_fall_as_in_the_official_torch_norm() -> None:
    """Points whose distance lies within an ulp of alpha * threshold: the official arithmetic
    (``torch.norm`` over float32 differences, compared with the Python-float threshold) decides."""
    import torch

    rng = np.random.default_rng(0)
    threshold = 97.3
    truth = rng.uniform(0, 500, (4000, 2)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, 4000)
    radius = 0.1 * threshold * (1 + rng.integers(-2, 3, 4000) * np.finfo(np.float32).eps)
    predicted = (truth + np.stack([np.cos(angle), np.sin(angle)], axis=1) * radius[:, None]).astype(np.float32)
    official = torch.norm(torch.from_numpy(predicted) - torch.from_numpy(truth), dim=-1)
    expected = [float((official <= alpha * threshold).float().mean()) for alpha in (0.05, 0.1, 0.15, 0.2)]
    assert pair_pck(predicted, truth, threshold) == expected
    assert 0.0 < expected[1] < 1.0  # the points straddle the 0.1 boundary
