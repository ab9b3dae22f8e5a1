"""Running one benchmark fold with an engine: batched inference, metrics, resumable state."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from core.engine import Insid3
from core.errors import InvalidInputError
from core.types import ReferenceFeatures
from evaluation.datasets import Episode, KeypointPair, SegmentationDataset, SpairDataset
from evaluation.errors import DatasetFormatError
from evaluation.metrics import IouMeter, PckMeter, episode_areas, pair_pck, resize_to_prediction
from evaluation.state import Record, RunDir


@dataclass(frozen=True)
class RunOptions:
    """How to run (none of these change the numbers, except ``limit`` the episode count)."""

    batch_size: int = 1
    limit: int | None = None
    resume: bool = False
    label: str = "eval"  # progress-bar title
    command: str = ""  # the command line, for log.txt


def _episode_count(length: int, limit: int | None) -> int:
    return length if limit is None else min(limit, length)


def _unique(keys: Sequence[Any]) -> tuple[list[int], list[int]]:
    """The position of the first occurrence of each distinct key, and each key's distinct slot."""
    slot_of: dict[Any, int] = {}
    positions: list[int] = []
    slots: list[int] = []
    for position, key in enumerate(keys):
        if key not in slot_of:
            slot_of[key] = len(positions)
            positions.append(position)
        slots.append(slot_of[key])
    return positions, slots


def predict_masks(engine: Insid3, episodes: Sequence[Episode]) -> list[npt.NDArray[np.bool_] | None]:
    """S x S predictions for a batch of episodes (None when no reference has a foreground pixel).

    References go through ``encode_references`` (content-hash cache, shared passes), targets
    through one ``encode_images`` call, each distinct target image encoded once.
    """
    usable = [[ref for ref in ep.references if np.any(ref.mask > 0)] for ep in episodes]
    features = iter(engine.encode_references([(ref.image, ref.mask > 0) for refs in usable for ref in refs]))
    references: list[list[ReferenceFeatures]] = [[next(features) for _ in refs] for refs in usable]
    positions, slots = _unique([(ep.target.key, ep.target.instance) for ep in episodes])
    encoded = engine.encode_images([episodes[p].target.image for p in positions])
    return [
        engine.segment_encoded(encoded[slot], refs).mask if refs else None
        for slot, refs in zip(slots, references, strict=True)
    ]


def score_episode(
    episode: Episode, prediction: npt.NDArray[np.bool_] | None, size: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Intersection and union on the S x S grid (ground truth and ignore map resized nearest)."""
    pred = np.zeros((size, size), dtype=bool) if prediction is None else np.asarray(prediction, dtype=bool)
    if pred.shape != (size, size):
        raise ValueError(f"the engine returned a {pred.shape} mask, expected {size}x{size}")
    gt = resize_to_prediction(episode.target.mask, size)
    ignore = None if episode.ignore is None else resize_to_prediction(episode.ignore, size)
    return episode_areas(pred, gt, ignore)


def _resumable_loop(
    run: RunDir,
    identity: dict[str, Any],
    options: RunOptions,
    length: int,
    replay: Callable[[Record], None],
    process: Callable[[range, np.random.RandomState], list[Record]],
    postfix: Callable[[], str],
) -> list[Record]:
    """Items ``0..total-1`` in batches, each batch committed to ``run`` before the next.

    ``replay`` feeds a saved record back into the metric; ``process`` draws, runs and scores one
    batch of indices with the run's RNG. Returns the records of the first ``total`` items.
    """
    rng, records = run.start(identity, options.resume)
    total = _episode_count(length, options.limit)
    run.log(f"{options.command}\n{'resumed at' if records else 'started at'} item {len(records)} of {total}: "
            f"{identity}")
    for record in records[:total]:
        replay(record)
    index = len(records)
    with tqdm(total=total, initial=min(index, total), desc=options.label, dynamic_ncols=True) as bar:
        while index < total:
            batch = process(range(index, min(index + options.batch_size, total)), rng)
            index += len(batch)
            run.commit(batch, index, rng)
            records += batch
            bar.update(len(batch))
            bar.set_postfix_str(postfix())
    return records[:total]


def run_segmentation(
    engine: Insid3,
    dataset: SegmentationDataset,
    run: RunDir,
    identity: dict[str, Any],
    options: RunOptions,
) -> dict[str, Any]:
    """mIoU/FB-IoU over the episodes, drawn lazily in index order, persisting as it goes."""
    meter = IouMeter(dataset.meter_width, dataset.class_ids)

    def replay(record: Record) -> None:
        meter.update(np.asarray(record["inter"]), np.asarray(record["union"]), record["class_id"])

    def process(indices: range, rng: np.random.RandomState) -> list[Record]:
        episodes = [dataset.episode(i, rng) for i in indices]
        try:
            predictions = predict_masks(engine, episodes)
        except InvalidInputError as exc:
            raise DatasetFormatError(f"episodes {indices.start}..{indices.stop - 1}: {exc.detail}") from exc
        batch = []
        for episode, prediction in zip(episodes, predictions, strict=True):
            inter, union = score_episode(episode, prediction, engine.image_size)
            meter.update(inter, union, episode.class_id)
            class_id, target, refs = episode.draw
            batch.append({
                "index": episode.index, "class_id": class_id, "target": target, "references": refs,
                "inter": inter.tolist(), "union": union.tolist(), "empty_prediction": prediction is None,
            })
        return batch

    records = _resumable_loop(run, identity, options, len(dataset), replay, process,
                              lambda: f"mIoU {meter.miou():.1f}")
    results = {
        **identity,
        "episodes": len(records),
        "episodes_in_dataset": len(dataset),
        "miou": meter.miou(),
        "fb_iou": meter.fb_iou(),
        "class_iou": meter.class_iou(),
        "episodes_without_usable_reference": sum(1 for r in records if r["empty_prediction"]),
    }
    run.write_results(results)
    run.log(f"mIoU = {results['miou']:.1f}, FB-IoU = {results['fb_iou']:.1f} over {len(records)} episodes")
    return results


def match_pairs(engine: Insid3, pairs: Sequence[KeypointPair], debiased: bool) -> list[npt.NDArray[np.float32]]:
    """Predicted target points of a batch of pairs (sources cached, targets encoded once each)."""
    sources = engine.encode_references([(pair.source, None) for pair in pairs])
    positions, slots = _unique([pair.target_key for pair in pairs])
    encoded = engine.encode_images([pairs[p].target for p in positions])
    return [
        engine.match_encoded(encoded[slot], source, pair.source_points, debiased).points
        for pair, source, slot in zip(pairs, sources, slots, strict=True)
    ]


def run_keypoints(
    engine: Insid3,
    dataset: SpairDataset,
    run: RunDir,
    identity: dict[str, Any],
    options: RunOptions,
) -> dict[str, Any]:
    """PCK of keypoint transfer over the pairs in order, persisting as it goes."""
    meter = PckMeter()

    def replay(record: Record) -> None:
        meter.update(record["pck"], record["category"])

    def process(indices: range, rng: np.random.RandomState) -> list[Record]:
        pairs = [dataset.pair(i) for i in indices]
        batch = []
        for pair, points in zip(pairs, match_pairs(engine, pairs, identity["debiased"]), strict=True):
            values = pair_pck(points, pair.target_points, pair.pck_threshold)
            meter.update(values, pair.category)
            batch.append({"index": pair.index, "pair": pair.name, "category": pair.category, "pck": values})
        return batch

    records = _resumable_loop(run, identity, options, len(dataset), replay, process,
                              lambda: f"PCK@0.10 {meter.result()['0.10']:.2f}")
    results = {
        **identity, "pairs": len(records), "pairs_in_dataset": len(dataset),
        "pck": meter.result(), "per_category": meter.per_category(),
    }
    run.write_results(results)
    run.log(", ".join(f"PCK@{alpha} = {value:.2f}" for alpha, value in results["pck"].items()))
    return results


def mean_over_folds(fold_results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The paper's number: the mean of the per-fold mIoU (and FB-IoU)."""
    def mean(key: str) -> float:
        values = [r[key] for r in fold_results.values()]
        return math.fsum(values) / len(values)

    return {
        "folds": {str(f): {"miou": r["miou"], "fb_iou": r["fb_iou"], "episodes": r["episodes"]}
                  for f, r in fold_results.items()},
        "miou": mean("miou"),
        "fb_iou": mean("fb_iou"),
    }
