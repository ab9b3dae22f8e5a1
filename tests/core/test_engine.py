"""The engine API: caching, batching, k-shot, matching, compatibility checks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.engine import Insid3
from core.errors import IncompatibleReferenceError, InvalidInputError, MissingExtraError
from core.types import ReferenceFeatures


def test_a_cached_reference_gives_exactly_the_same_mask(engine: Insid3, scene) -> None:
    image, mask = scene
    engine.cache.discard(engine.reference_key(image, mask))
    hits = engine.cache.hits
    fresh = engine.encode_reference(image, mask)
    cached = engine.encode_reference(image.copy(), mask.copy())
    assert cached is fresh and engine.cache.hits == hits + 1
    target = np.roll(image, 20, axis=1)
    engine.cache.discard(fresh.key)
    recomputed = engine.encode_reference(image, mask)
    assert recomputed is not fresh
    assert np.array_equal(engine.segment(target, [fresh]).mask, engine.segment(target, [recomputed]).mask)


def test_serialised_references_round_trip(engine: Insid3, scene) -> None:
    reference = engine.encode_reference(*scene)
    lossless = ReferenceFeatures.from_bytes(reference.to_bytes("fp32"))
    assert torch.equal(lossless.debiased, reference.debiased) and torch.equal(lossless.mask, reference.mask)
    assert (lossless.key, lossless.model_id, lossless.original_size) == (
        reference.key, reference.model_id, reference.original_size)
    half = ReferenceFeatures.from_bytes(reference.to_bytes("fp16"))
    assert (half.debiased - reference.debiased).abs().max() < 1e-3


def test_references_stored_without_the_debiased_map_give_the_same_masks(engine: Insid3, scene) -> None:
    image, mask = scene
    reference = engine.encode_reference(image, mask)
    both, raw_only = reference.to_bytes("fp16"), reference.to_bytes("fp16", with_debiased=False)
    assert len(raw_only) < 0.6 * len(both)
    with pytest.raises(ValueError, match="basis"):
        ReferenceFeatures.from_bytes(raw_only)
    loaded = engine.load_reference(raw_only)
    assert (loaded.debiased - reference.debiased).abs().max() < 2e-3
    for shift in (0, 10, 25, 40):
        target = np.roll(image, shift, axis=1)
        expected = engine.segment(target, [engine.load_reference(both)]).mask
        assert np.array_equal(engine.segment(target, [loaded]).mask, expected)


def test_segment_batch_equals_one_by_one(tiny_checkpoint: Path, scene, tmp_path: Path) -> None:
    batched = Insid3.build(model_size="tiny", weights=tiny_checkpoint, image_size=128, device="cpu",
                           basis_cache_dir=tmp_path, encoder_batch_size=4)
    image, mask = scene
    reference = batched.encode_reference(image, mask)
    targets = [np.roll(image, shift, axis=1) for shift in (0, 15, 30, 45, 60)]
    together = batched.segment_batch(targets, [reference])
    alone = [batched.segment(target, [reference]) for target in targets]
    assert [r.mask.tobytes() for r in together] == [r.mask.tobytes() for r in alone]


def test_k_shot_with_any_number_of_shots(engine: Insid3, scene) -> None:
    image, mask = scene
    shots = [engine.encode_reference(np.roll(image, s, axis=0), np.roll(mask, s, axis=0)) for s in (0, 5, 10, 15)]
    for k in range(1, 5):
        result = engine.segment(image, shots[:k])
        assert result.mask.shape == mask.shape


def test_results_come_at_the_original_size_or_the_model_size(tiny_checkpoint: Path, engine: Insid3, scene,
                                                            tmp_path: Path) -> None:
    image, mask = scene
    result = engine.segment(image, [engine.encode_reference(image, mask)])
    assert result.mask.shape == (96, 160) and result.mask.dtype == bool
    assert result.area == int(result.mask.sum())
    if result.area:
        x, y, w, h = result.bbox
        assert result.mask[y:y + h, x:x + w].sum() == result.area
    square = Insid3.build(model_size="tiny", weights=tiny_checkpoint, image_size=128, device="cpu",
                          basis_cache_dir=tmp_path, resize_to_original=False)
    assert square.segment(image, [square.encode_reference(image, mask)]).mask.shape == (128, 128)


def test_references_of_another_model_or_size_are_refused(engine: Insid3, tiny_checkpoint: Path, scene,
                                                         tmp_path: Path) -> None:
    other = Insid3.build(model_size="tiny", weights=tiny_checkpoint, image_size=64, device="cpu",
                         basis_cache_dir=tmp_path)
    foreign = other.encode_reference(*scene)
    with pytest.raises(IncompatibleReferenceError, match="image size 64"):
        engine.segment(scene[0], [foreign])


def test_matching_only_references_cannot_segment(engine: Insid3, scene) -> None:
    reference = engine.encode_reference(scene[0])
    with pytest.raises(InvalidInputError, match="no mask"):
        engine.segment(scene[0], [reference])
    with pytest.raises(InvalidInputError, match="at least one reference"):
        engine.segment(scene[0], [])


def test_matching_an_image_onto_itself_finds_the_same_points(engine: Insid3, scene) -> None:
    image, _ = scene
    points = [[60.0, 40.0], [120.0, 70.0], [10.0, 85.0]]
    for debiased in (True, False):
        result = engine.match(image, image, points, debiased=debiased)
        assert result.points.shape == (3, 2) and result.confidence.shape == (3,)
        # The soft-argmax peaks on the source cell: within one cell (160/8 x 96/8 px) of the point.
        assert np.all(np.abs(result.points - np.array(points)) <= [20.0, 12.0])
        assert np.allclose(result.confidence, 1.0, atol=1e-5)
    with pytest.raises(InvalidInputError, match="keypoints"):
        engine.match(image, image, [[1.0, float("nan")]])


def test_the_positional_basis_is_deterministic_and_cached_on_disk(tiny_checkpoint: Path, tmp_path: Path) -> None:
    first = Insid3.build(model_size="tiny", weights=tiny_checkpoint, image_size=96, device="cpu",
                         basis_cache_dir=tmp_path)
    assert len(list(tmp_path.glob("basis-*.pt"))) == 1
    uncached = Insid3.build(model_size="tiny", weights=tiny_checkpoint, image_size=96, device="cpu",
                            basis_cache_dir=None)
    projector = first.basis @ first.basis.T
    assert torch.allclose(projector, uncached.basis @ uncached.basis.T, atol=1e-5)
    # That the next build reads the cache, and never a tampered one: tests/core/test_verified_caches.py.


def test_crf_refinement_runs_and_a_missing_extra_is_a_clear_error(tiny_checkpoint: Path, scene, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    refined = Insid3.build(model_size="tiny", weights=tiny_checkpoint, image_size=128, device="cpu",
                           basis_cache_dir=tmp_path, crf=True)
    image, mask = scene
    assert refined.segment(image, [refined.encode_reference(image, mask)]).mask.shape == mask.shape
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(MissingExtraError, match=r"insid3-serve\[crf\]"):
        Insid3.build(model_size="tiny", weights=tiny_checkpoint, image_size=128, device="cpu",
                     basis_cache_dir=tmp_path, crf=True)


def test_engine_options_are_declared_once(engine: Insid3, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """One options object: ``Insid3.build`` takes it and keyword fields on top, the settings extend it,
    every command's flags come from it; invalid or unknown fields are one clear error."""
    import argparse

    from core.errors import ConfigurationError
    from core.settings import EngineOptions, EngineSettings

    options = EngineOptions(model_size="tiny", weights=tiny_checkpoint, image_size=64, device="cpu",
                            basis_cache_dir=tmp_path)
    built = Insid3.build(options, image_size=96, encoder_batch_size=2)
    assert (built.image_size, built.options.encoder_batch_size) == (96, 2)
    assert built.options.svd_components == 24  # unset: the tiny backbone's own
    assert engine.options.encoder_batch_size == 1  # unset: one image per call on the CPU
    with pytest.raises(ConfigurationError, match="multiple of 16"):
        Insid3.build(options, image_size=100)
    with pytest.raises(ConfigurationError, match="no_such_option"):
        Insid3.build(options, no_such_option=1)
    assert isinstance(EngineSettings(), EngineOptions)
    parser = argparse.ArgumentParser()
    EngineSettings.add_arguments(parser)
    flags = {action.dest for action in parser._actions} - {"help"}
    assert flags == set(EngineOptions.model_fields) - {"resize_to_original"}
