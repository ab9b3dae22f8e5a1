"""Batched inference of episodes: shared images are encoded once, empty references handled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.engine import Insid3
from evaluation.datasets import Episode, Sample, build_segmentation
from evaluation.runner import predict_masks, score_episode
from evaluation.sampling import new_rng


@pytest.fixture
def counted(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Insid3, list[int]]:
    """A tiny engine and the number of images of each of its encoder calls."""
    engine = Insid3.build(model_size="tiny", weights=str(tiny_checkpoint), image_size=64, device="cpu",
                          precision="fp32", basis_cache_dir=None, resize_to_original=False)
    encoded: list[int] = []
    original = engine.encode_inputs
    monkeypatch.setattr(engine, "encode_inputs", lambda inputs: encoded.append(len(inputs)) or original(inputs))
    return engine, encoded


def permis_episodes(data: Any) -> list[Episode]:
    dataset = build_segmentation("permis", data.root, 0, 1)
    rng = new_rng(0)
    return [dataset.episode(i, rng) for i in range(2)]  # both use frame 0 of the first video


def test_a_shared_reference_is_encoded_once_across_batches(synthetic: Any, counted: Any) -> None:
    engine, encoded = counted
    first, second = permis_episodes(synthetic)
    predict_masks(engine, [first])
    predict_masks(engine, [second])
    assert sum(encoded) == 3  # reference once, two targets
    assert (engine.cache.hits, engine.cache.misses) == (1, 1)


def test_a_batch_encodes_each_distinct_image_once(synthetic: Any, counted: Any) -> None:
    engine, encoded = counted
    first, second = permis_episodes(synthetic)
    masks = predict_masks(engine, [first, second, first])
    assert sum(encoded) == 3  # reference once, targets frame 1 and frame 2 once each
    assert all(m.shape == (64, 64) and m.dtype == bool for m in masks)
    assert np.array_equal(masks[0], masks[2])
    assert np.array_equal(masks[0], predict_masks(engine, [first])[0])


def test_an_episode_without_a_usable_reference_predicts_background(synthetic: Any, counted: Any) -> None:
    engine, _ = counted
    first = permis_episodes(synthetic)[0]
    reference = first.references[0]
    empty = Sample(reference.key, reference.image, np.zeros_like(reference.mask))
    episode = Episode(0, 0, first.target, [empty])
    assert predict_masks(engine, [episode]) == [None]
    inter, union = score_episode(episode, None, 64)
    assert inter[1] == 0 and union[1] > 0
