"""Encoder runtimes: parity with torch, the on-disk export cache, the ``auto`` choice, ``insid3 export``."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from core import runtime_choice, runtimes
from core.artifacts import read_verified, store
from core.engine import Insid3
from core.errors import ConfigurationError, CorruptWeightsError
from core.runtime_choice import Variant

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

SIZE = 128  # 64 patches: the 24-component positional basis is well defined (rank 63)


def build(checkpoint: Path, cache: Path | None, runtime: str) -> Insid3:
    return Insid3.build(model_size="tiny", weights=checkpoint, image_size=SIZE, device="cpu",
                        basis_cache_dir=cache, runtime=runtime)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture(scope="module")
def engines(tiny_checkpoint: Path, cache: Path) -> dict[str, Insid3]:
    return {name: build(tiny_checkpoint, cache, name) for name in runtimes.RUNTIMES}


def scenes(count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(reference, mask, target) triples: a bright disc on noise, moved and re-noised in the target."""
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        image = rng.integers(0, 90, (80, 96, 3), dtype=np.uint8)
        rows, cols = np.mgrid[:80, :96]
        mask = (rows - 40) ** 2 + (cols - 30 - 4 * seed) ** 2 < 18**2
        image[mask] = rng.integers(150, 255, 3)
        target = np.clip(np.roll(image, 12, axis=1) + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
        out.append((image, mask, target))
    return out


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_each_runtime_gives_torchs_features_basis_and_masks(engines: dict[str, Insid3], name: str) -> None:
    reference, engine = engines["torch"], engines[name]
    assert engine.runtime.name == name
    images = torch.randn(2, 3, SIZE, SIZE)  # a batch of 2: the export has a dynamic batch
    assert (engine.encode_tensor(images) - reference.encode_tensor(images)).abs().max() <= 1e-4
    assert (engine.basis @ engine.basis.T - reference.basis @ reference.basis.T).abs().max() <= 1e-4
    for image, mask, target in scenes(3):
        expected = reference.segment(target, [reference.encode_reference(image, mask)]).mask
        assert np.array_equal(engine.segment(target, [engine.encode_reference(image, mask)]).mask, expected)


def test_a_warm_restart_reuses_the_export_and_the_parity_verdict_without_reading_the_weights(
    engines: dict[str, Insid3], tiny_checkpoint: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.backbone

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-exported, re-compiled, re-probed or read the weights of a cached encoder")

    monkeypatch.setattr(runtimes, "export_onnx", never)
    monkeypatch.setattr(runtimes, "constant_probe", never)
    monkeypatch.setattr(core.backbone, "read_state_dict", never)
    for name in ("onnxruntime", "openvino"):
        engine = build(tiny_checkpoint, cache, name)
        assert engine.runtime.name == name and engine.encode_tensor(torch.zeros(1, 3, SIZE, SIZE)).shape[0] == 1


def _artifact(cache: Path, pattern: str, **made_from: object) -> Path:
    """The one cached file matching ``pattern`` whose record says it is made from ``made_from``."""
    stem, suffix = pattern.rsplit(".", 1)
    (path,) = [meta.with_suffix(f".{suffix}") for meta in (cache / "encoders").glob(f"{stem}.json")
               if made_from.items() <= json.loads(meta.read_text())["made_from"].items()]
    return path


def _made_from(path: Path) -> dict[str, object]:
    return json.loads(path.with_suffix(".json").read_text())["made_from"]


def _same_features(engine: Insid3, reference: Insid3) -> bool:
    images = torch.randn(2, 3, SIZE, SIZE)
    return bool((engine.encode_tensor(images) - reference.encode_tensor(images)).abs().max() <= 1e-4)


def test_a_corrupt_or_stale_export_or_compiled_model_is_rebuilt(engines: dict[str, Insid3], tiny_checkpoint: Path,
                                                                cache: Path) -> None:
    onnx = _artifact(cache, "encoder-*.onnx", opset=runtimes.OPSETS["onnxruntime"])
    original = onnx.read_bytes()
    onnx.write_bytes(original[: len(original) // 2])  # truncated
    engine = build(tiny_checkpoint, cache, "onnxruntime")
    assert onnx.read_bytes() == original and _same_features(engine, engines["torch"])

    blob = _artifact(cache, "openvino-*.blob")
    blob.write_bytes(blob.read_bytes()[:1000])  # truncated: recompiled from the cached export
    engine = build(tiny_checkpoint, cache, "openvino")
    assert read_verified(blob, _made_from(blob))
    assert _same_features(engine, engines["torch"])

    blob.with_suffix(".json").write_text("{not json")  # a broken record: rebuilt
    assert _same_features(build(tiny_checkpoint, cache, "openvino"), engines["torch"])
    assert read_verified(blob, _made_from(blob))

    # Verified but unloadable (made by another OpenVINO build): recompiled.
    store(blob, _made_from(blob), lambda scratch: scratch.write_bytes(b"not an OpenVINO model"))
    assert _same_features(build(tiny_checkpoint, cache, "openvino"), engines["torch"])
    assert blob.read_bytes() != b"not an OpenVINO model"


def test_auto_never_picks_a_missing_or_failing_runtime(engines: dict[str, Insid3], tiny_checkpoint: Path,
                                                       cache: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    report = build(tiny_checkpoint, cache, "auto").runtime.report
    assert report is not None and {m.label for m in report.measurements} >= set(runtimes.RUNTIMES)
    monkeypatch.setattr(runtime_choice, "EXACT_TOLERANCE", -1.0)  # every runtime now "fails" its parity probe
    monkeypatch.setattr(runtimes, "PROBE_TOLERANCE", -1.0)
    assert build(tiny_checkpoint, tmp_path / "strict", "auto").runtime.name == "torch"
    with pytest.raises(ConfigurationError, match="differs from torch"):
        build(tiny_checkpoint, cache, "openvino")
    monkeypatch.setattr(runtimes, "runtime_version", lambda name: torch.__version__ if name == "torch" else None)
    assert build(tiny_checkpoint, None, "auto").runtime.name == "torch"
    with pytest.raises(ConfigurationError, match="not installed"):
        build(tiny_checkpoint, None, "onnxruntime")


def test_unusable_weights_are_their_own_error_under_every_runtime(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    for name in runtimes.RUNTIME_CHOICES:  # never "runtime unavailable", never a silent fall back to torch
        with pytest.raises(CorruptWeightsError, match="corrupt"):
            build(corrupt, tmp_path / "cache", name)


def test_exported_runtimes_run_on_the_cpu_at_the_precisions_they_have() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with pytest.raises(ConfigurationError, match="runs fp32 on the CPU"):
        runtimes.candidates("onnxruntime", cpu, torch.bfloat16)
    with pytest.raises(ConfigurationError, match="runs on the CPU"):
        runtimes.candidates("openvino", cuda, torch.float32)
    assert runtimes.candidates("openvino", cpu, torch.bfloat16) == [Variant("openvino", "bf16")]
    assert runtimes.candidates("auto", cuda, torch.bfloat16) == [Variant("torch", "bf16")]
    assert runtimes.candidates("auto", cpu, torch.float16) == [Variant("torch", "fp16")]
    assert runtimes.candidates("auto", cpu, torch.bfloat16) == [Variant("torch", "bf16"), Variant("openvino", "bf16")]
    with pytest.raises(ConfigurationError, match="unknown runtime"):
        runtimes.candidates("tensorrt", cpu, torch.float32)


def test_insid3_export_writes_a_triton_repository(tiny_checkpoint: Path, engines: dict[str, Insid3],
                                                  tmp_path: Path) -> None:
    import onnxruntime

    from insid3.cli import main

    assert main(["export", "--format", "onnx", "--model-size", "tiny", "--weights", str(tiny_checkpoint),
                 "--image-size", str(SIZE), "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "insid3_export.json").read_text())
    assert manifest["basis_runtime"] == "onnxruntime" and manifest["probe_max_abs_vs_torch"] <= 1e-4
    config = (tmp_path / "insid3_encoder" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and f"dims: [ 3, {SIZE}, {SIZE} ]" in config
    session = onnxruntime.InferenceSession(str(tmp_path / manifest["model"]), providers=["CPUExecutionProvider"])
    images = torch.randn(3, 3, SIZE, SIZE)
    (features,) = session.run(None, {"pixels": images.numpy()})
    expected = engines["torch"].torch_features(images)
    assert features.shape == tuple(expected.shape) and np.abs(features - expected.numpy()).max() <= 1e-4
    basis = np.load(tmp_path / "positional_basis.npy")
    torch_basis = engines["torch"].basis.numpy()
    assert np.abs(basis @ basis.T - torch_basis @ torch_basis.T).max() <= 1e-4
    umask = os.umask(0o022)
    os.umask(umask)
    for made in (tmp_path / manifest["model"], tmp_path / "positional_basis.npy", tmp_path / "insid3_export.json"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o666 & ~umask, made  # readable like every other file
