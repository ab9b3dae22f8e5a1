"""The official metrics: per-class intersection/union buffers (mIoU, FB-IoU) and PCK.

Per episode, ``episode_areas`` counts background (row 0) and foreground (row 1) agreement and
union pixels, leaving ignore pixels out of every count. ``IouMeter`` adds them into float32
2 x W buffers column ``class_id`` (what the official does on CUDA; here on CPU, same float32
rounding), mIoU averages the foreground IoU of the evaluated classes (an absent class counts 0)
and FB-IoU averages the background and foreground IoU of the summed counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from core.images import mask_to_tensor

PCK_ALPHAS = (0.05, 0.10, 0.15, 0.20)
Counts = npt.NDArray[np.int64]  # (2,): background, foreground


def resize_to_prediction(mask: npt.NDArray[np.generic], size: int) -> npt.NDArray[np.bool_]:
    """A ground-truth or ignore map brought to the S x S prediction grid: torch legacy
    ``nearest``, then > 0.5 (raw values pass through, as for PerMIS)."""
    return mask_to_tensor(np.asarray(mask, dtype=np.float32), size).numpy()


def episode_areas(
    pred: npt.NDArray[np.bool_],
    gt: npt.NDArray[np.bool_],
    ignore: npt.NDArray[np.bool_] | None = None,
) -> tuple[Counts, Counts]:
    """Intersection and union, each ``[background, foreground]``, of one prediction."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    valid = np.ones_like(gt, dtype=bool)
    if ignore is not None:
        if ignore.shape != gt.shape:
            raise ValueError(f"ignore map {ignore.shape} and ground truth {gt.shape} differ in shape")
        if np.any(ignore & gt):
            raise ValueError("ignore pixels overlap the ground-truth foreground")
        valid = ~ignore
    inter = np.array([np.sum(~pred & ~gt & valid), np.sum(pred & gt & valid)], dtype=np.int64)
    area_pred = np.array([np.sum(~pred & valid), np.sum(pred & valid)], dtype=np.int64)
    area_gt = np.array([np.sum(~gt & valid), np.sum(gt & valid)], dtype=np.int64)
    return inter, area_pred + area_gt - inter


class IouMeter:
    """The official ``AverageMeter`` on CPU: float32 2 x ``width`` intersection/union sums."""

    def __init__(self, width: int, class_ids: Sequence[int]) -> None:
        self.class_ids = list(class_ids)
        self.intersection = torch.zeros(2, width, dtype=torch.float32)
        self.union = torch.zeros(2, width, dtype=torch.float32)

    def update(self, inter: Counts, union: Counts, class_id: int) -> None:
        """Add one episode's counts into column ``class_id``."""
        column = torch.tensor([class_id])
        self.intersection.index_add_(1, column, torch.tensor(inter, dtype=torch.float32)[:, None])
        self.union.index_add_(1, column, torch.tensor(union, dtype=torch.float32)[:, None])

    def class_iou(self) -> dict[int, float]:
        """Foreground IoU x 100 of every evaluated class (0 for a class never seen)."""
        iou = self.intersection[1] / torch.clamp(self.union[1], min=1.0)
        return {c: float(iou[c]) * 100.0 for c in self.class_ids}

    def miou(self) -> float:
        """Mean foreground IoU x 100 over the evaluated classes."""
        iou = self.intersection[1] / torch.clamp(self.union[1], min=1.0)
        return float(iou[self.class_ids].mean()) * 100.0

    def fb_iou(self) -> float:
        """Mean of the background and foreground IoU x 100 of the summed counts (NaN when empty)."""
        inter = self.intersection[:, self.class_ids].sum(dim=1)
        union = self.union[:, self.class_ids].sum(dim=1)
        return float((inter / union).mean()) * 100.0


def pair_pck(
    predicted: npt.NDArray[np.floating],
    truth: npt.NDArray[np.floating],
    threshold: float,
    alphas: Sequence[float] = PCK_ALPHAS,
) -> list[float]:
    """Per alpha, the fraction of points within ``alpha * threshold`` pixels, with the official
    arithmetic (``torch.norm`` of float32 differences: points exactly on a boundary fall the same way)."""
    diff = torch.as_tensor(np.asarray(predicted, dtype=np.float32)) - torch.as_tensor(
        np.asarray(truth, dtype=np.float32))
    distance = torch.norm(diff, dim=-1)
    return [float((distance <= alpha * threshold).float().mean()) for alpha in alphas]


class PckMeter:
    """Per-pair PCK values, averaged over all pairs (``avg_by='all'``) and per category."""

    def __init__(self, alphas: Sequence[float] = PCK_ALPHAS) -> None:
        self.alphas = tuple(alphas)
        self.values: list[list[float]] = []
        self.categories: list[str] = []

    def update(self, values: Sequence[float], category: str) -> None:
        """Record one pair's PCK (one value per alpha)."""
        self.values.append(list(values))
        self.categories.append(category)

    def result(self) -> dict[str, float]:
        """PCK x 100 per alpha (``"0.05"`` ...), mean over every pair (NaN before any pair)."""
        return self._mean(self.values)

    def per_category(self) -> dict[str, dict[str, float]]:
        """PCK x 100 per alpha of each category's pairs, categories sorted."""
        return {
            cat: self._mean([v for v, c in zip(self.values, self.categories, strict=True) if c == cat])
            for cat in sorted(set(self.categories))
        }

    def _mean(self, rows: list[list[float]]) -> dict[str, float]:
        if not rows:
            return {f"{a:.2f}": math.nan for a in self.alphas}
        means = np.asarray(rows, dtype=np.float64).mean(axis=0) * 100.0
        return {f"{a:.2f}": float(m) for a, m in zip(self.alphas, means, strict=True)}
