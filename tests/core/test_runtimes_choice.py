"""``auto`` by measurement (cached, never an inexact runtime in fp32), bf16 on the CPU, native-bf16 detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core import metrics, runtime_choice
from core.engine import Insid3
from core.runtime_choice import Measurement, missing_native_bf16, pick
from tests.support.images import disc_scene, iou

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

SIZE = 128


def build(checkpoint: Path, cache: Path, runtime: str = "auto", precision: str = "fp32",
          image_size: int = SIZE) -> Insid3:
    return Insid3.build(model_size="tiny", weights=checkpoint, image_size=image_size, device="cpu",
                        basis_cache_dir=cache, runtime=runtime, precision=precision)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if np.array_equal(a, b) else iou(a, b)


def test_the_measured_choice_is_cached_and_reused_and_a_changed_key_measures_again(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build(tiny_checkpoint, tmp_path).runtime
    assert first.report is not None and not first.report.reused
    chosen = first.report.measured(runtime_choice.Variant(first.name, first.precision))
    exact = [m for m in first.report.measurements if m.precision == "fp32" and m.exact]
    assert chosen is not None and chosen.exact and chosen.ms == min(m.ms for m in exact)
    assert metrics.encoder_runtime() == first.summary()

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured again although the choice is cached")

    with monkeypatch.context() as patch:
        patch.setattr(runtime_choice, "measure", never)
        again = build(tiny_checkpoint, tmp_path).runtime
    assert again.report is not None and again.report.reused and again.name == first.name
    assert again.report.measurements == first.report.measurements

    other_size = build(tiny_checkpoint, tmp_path, image_size=SIZE + 16).runtime  # another key
    assert other_size.report is not None and not other_size.report.reused
    for report in (tmp_path / "encoders").glob("choice-*.report"):
        report.write_bytes(report.read_bytes()[:-5])  # corrupt: measured again, never trusted
    assert not build(tiny_checkpoint, tmp_path).runtime.report.reused


def test_fp32_never_picks_an_inexact_runtime_however_fast() -> None:
    exact = Measurement("openvino", "fp32", ms=100.0, max_abs=1e-6, mean_iou=1.0, min_iou=1.0, identical=3, scenes=3)
    off = Measurement("onnxruntime", "fp32", ms=50.0, max_abs=2e-4, mean_iou=1.0, min_iou=1.0, identical=3, scenes=3)
    differing = Measurement("torch", "fp32", ms=60.0, max_abs=0.0, mean_iou=0.99, min_iou=0.97, identical=2, scenes=3)
    approximate = Measurement("openvino", "bf16", ms=30.0, max_abs=0.03, mean_iou=0.98, min_iou=0.95,
                              identical=1, scenes=3)
    broken = Measurement("onnxruntime", "bf16", error="cannot load")
    candidates = [off, differing, approximate, broken, exact]
    assert pick(candidates, "fp32") is exact
    assert pick(candidates, "bf16") is approximate  # asked for: the approximation is allowed
    assert pick([off, differing], "fp32") is None
    note = runtime_choice.explain(candidates, exact, "fp32")
    assert note is not None and "openvino-bf16 is 3.33x faster but not eligible" in note
    too_far = Measurement("openvino", "bf16", ms=30.0, max_abs=0.3, mean_iou=0.8, min_iou=0.5, identical=0, scenes=3)
    assert pick([too_far], "bf16") is None


def test_the_measured_report_shows_a_faster_inexact_candidate_without_picking_it(tiny_checkpoint: Path,
                                                                                 tmp_path: Path) -> None:
    report = build(tiny_checkpoint, tmp_path).runtime.report
    assert report is not None and report.precision == "fp32"
    assert report.measured(runtime_choice.Variant(report.runtime, "fp32")).exact
    if missing_native_bf16(runtime_choice.cpu_flags()) is None:
        bf16 = report.measured(runtime_choice.Variant("openvino", "bf16"))
        assert bf16 is not None and not bf16.exact  # measured and reported, never eligible in fp32


def test_native_bf16_is_detected_from_the_cpu_flags() -> None:
    assert missing_native_bf16({"avx2", "avx512f", "avx512_bf16"}) is None
    assert missing_native_bf16({"avx2", "amx_bf16", "amx_tile"}) is None
    reason = missing_native_bf16({"avx2", "avx512f", "fma"})
    assert reason is not None and "avx512_bf16" in reason and "amx_bf16" in reason
    assert "could not be read" in (missing_native_bf16(set()) or "")


@pytest.mark.skipif(missing_native_bf16(runtime_choice.cpu_flags()) is not None,
                    reason="this CPU has no native bf16")
@pytest.mark.parametrize("runtime", ["openvino", "auto"])
def test_bf16_on_a_cpu_with_native_bf16_gives_masks_close_to_fp32(tiny_checkpoint: Path, tmp_path: Path,
                                                                  runtime: str) -> None:
    reference = build(tiny_checkpoint, tmp_path, "torch", "fp32")
    engine = build(tiny_checkpoint, tmp_path, runtime, "bf16")
    assert engine.runtime.precision == "bf16" and engine.runtime.basis_tag.endswith("-bf16")
    images = torch.randn(1, 3, SIZE, SIZE)
    assert 0 < (engine.encode_tensor(images) - reference.encode_tensor(images)).abs().max() < 0.2
    ious = []
    for seed in range(6):
        shown = disc_scene(seed, 96, 128, [(48, 40, 22)])
        target = disc_scene(seed + 50, 96, 128, [(44, 84, 22)]).image
        expected = reference.segment(target, [reference.encode_reference(shown.image, shown.mask)]).mask
        assert expected.any()
        ious.append(_iou(engine.segment(target, [engine.encode_reference(shown.image, shown.mask)]).mask, expected))
    assert np.mean(ious) >= runtime_choice.FIDELITY_FLOOR


def test_bf16_on_a_cpu_without_native_bf16_says_so(tiny_checkpoint: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(runtime_choice, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))  # an older CPU
    engine = build(tiny_checkpoint, tmp_path, "auto", "bf16")
    assert any("no native bf16" in record.getMessage() and "avx512_bf16" in record.getMessage()
               for record in caplog.records)
    assert engine.runtime.report is not None and "no native bf16" in (engine.runtime.report.note or "")
