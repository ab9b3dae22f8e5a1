"""``insid3 tune``: choose tau and merge_threshold for a dataset from a few labelled examples.

Leave-one-out: each example in turn is the target and the others its references. Every example is
encoded once (its features serve both as a reference and as a target); the grid then reruns only
the pipeline after the encoder (``Insid3.segment_encoded``) and scores the mean IoU over the folds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.artifacts import write_atomic
from core.errors import InvalidInputError
from insid3.labelling.sources import Example

if TYPE_CHECKING:
    from core.engine import Insid3
    from core.types import EncodedImage, ReferenceFeatures

DEFAULT_TAUS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_MERGE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4)


@dataclass(frozen=True)
class Score:
    """The mean IoU of one grid point over the leave-one-out folds (and each fold's IoU)."""

    tau: float
    merge_threshold: float
    miou: float
    ious: tuple[float, ...]


@dataclass(frozen=True)
class _Encoded:
    reference: ReferenceFeatures
    target: EncodedImage
    truth: np.ndarray


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union (1 when both are empty)."""
    union = np.logical_or(prediction, truth).sum()
    return float(np.logical_and(prediction, truth).sum() / union) if union else 1.0


def require_folds(examples: Sequence[Example]) -> None:
    """Leave-one-out needs a target and at least one reference."""
    if len(examples) < 2:
        raise InvalidInputError("tuning needs at least two --example IMAGE MASK pairs (one is the target)")


def _encode(engine: Insid3, example: Example) -> _Encoded:
    """One example through the encoder once: as a reference, as a target, and its true mask."""
    from core.images import load_mask

    prepared = engine.prepare_reference(example.image, example.mask)
    [encoded] = engine.encode_inputs([prepared.input])
    reference = engine.finish_reference(engine.reference_key(example.image, example.mask), prepared, encoded)
    return _Encoded(reference, encoded, load_mask(example.mask, engine.options.max_pixels))


def grid_search(engine: Insid3, examples: Sequence[Example], taus: Sequence[float],
                merge_thresholds: Sequence[float]) -> list[Score]:
    """The leave-one-out mean IoU of every (tau, merge_threshold), in grid order."""
    require_folds(examples)
    encoded = [_encode(engine, example) for example in examples]
    scores = []
    for tau in taus:
        for merge_threshold in merge_thresholds:
            ious = tuple(
                iou(engine.segment_encoded(held.target, [e.reference for e in encoded if e is not held], tau,
                                           merge_threshold).mask, held.truth)
                for held in encoded)
            scores.append(Score(tau, merge_threshold, float(np.mean(ious)), ious))
    return scores


def best(scores: Sequence[Score]) -> Score:
    """The highest mean IoU (the first in grid order on a tie)."""
    return max(scores, key=lambda score: score.miou)


def table(scores: Sequence[Score]) -> str:
    """The grid as a table, one row per (tau, merge_threshold)."""
    folds = len(scores[0].ious)
    header = "tau   merge_threshold  mIoU    " + "  ".join(f"fold{i + 1}" for i in range(folds))
    rows = [f"{s.tau:<5g} {s.merge_threshold:<16g} {s.miou:.4f}  " + "  ".join(f"{v:.3f}" for v in s.ious)
            for s in scores]
    return "\n".join([header, *rows])


def save(path: Path, choice: Score, examples: Sequence[Example]) -> None:
    """The choice as JSON (what ``insid3 label --params`` reads)."""
    write_atomic(path, json.dumps({
        "tau": choice.tau, "merge_threshold": choice.merge_threshold, "miou": round(choice.miou, 6),
        "examples": [[str(e.image), str(e.mask)] for e in examples],
    }, indent=1).encode())


def read_params(path: Path) -> dict[str, float]:
    """``tau`` and ``merge_threshold`` from a file ``insid3 tune --save`` wrote."""
    try:
        value = json.loads(path.read_text())
        params = {name: float(value[name]) for name in ("tau", "merge_threshold")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"--params {path}: not a file written by insid3 tune --save ({exc})") from None
    if not all(0.0 <= v <= 1.0 for v in params.values()):
        raise InvalidInputError(f"--params {path}: tau and merge_threshold must lie in [0, 1]")
    return params
