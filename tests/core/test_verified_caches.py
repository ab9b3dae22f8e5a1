"""Every cache is verified on load: a positional basis or an exported encoder tampered with on disk
(NaN, one value changed, a wrong shape, a forged record, a file swapped after its check) is logged
and rebuilt, and the engine's answers equal a clean engine's."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import runtimes
from core.artifacts import KEY_FILE, read_verified
from core.engine import Insid3
from tests.support.paths import REPO_ROOT
from tests.support.processes import INSID3

SIZE = 64


def build(checkpoint: Path, cache: Path | None, runtime: str = "torch", image_size: int = SIZE) -> Insid3:
    return Insid3.build(model_size="tiny", weights=checkpoint, image_size=image_size, device="cpu",
                        basis_cache_dir=cache, runtime=runtime)


@pytest.fixture(scope="module")
def clean(tiny_checkpoint: Path) -> Insid3:
    """An engine that computed its basis itself (no cache)."""
    return build(tiny_checkpoint, None)


def answer(engine: Insid3, scene: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, float]:
    image, mask = scene
    result = engine.segment(np.roll(image, 25, axis=1), [engine.encode_reference(image, mask)])
    return result.mask, result.score


def forge_record(path: Path) -> None:
    """Rewrite the record's sha256 to match the file's new bytes (without the cache's key)."""
    record_path = path.with_suffix(".json")
    record = json.loads(record_path.read_text())
    record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    record_path.write_text(json.dumps(record))


def edit_basis(edit: Callable[[torch.Tensor], torch.Tensor], forge: bool = False) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        torch.save(edit(torch.load(path, weights_only=True)), path)
        if forge:
            forge_record(path)
    return tamper


def add_to_one_value(amount: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def edit(basis: torch.Tensor) -> torch.Tensor:
        basis[3, 1] += amount
        return basis
    return edit


TAMPERINGS = {
    "nan": edit_basis(add_to_one_value(float("nan"))),
    "one value changed": edit_basis(add_to_one_value(0.25)),
    "wrong shape, forged record": edit_basis(lambda basis: basis[:, :-1].clone(), forge=True),
    "inf, forged record": edit_basis(add_to_one_value(float("inf")), forge=True),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:100]),
    "record from another cache": lambda path: path.with_suffix(".json").write_text(json.dumps(
        {**json.loads(path.with_suffix(".json").read_text()), "mac": "0" * 64})),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_a_tampered_basis_is_rebuilt_and_the_answers_equal_a_clean_engines(
    tiny_checkpoint: Path, clean: Insid3, scene, tmp_path: Path, tampering: str, caplog: pytest.LogCaptureFixture
) -> None:
    build(tiny_checkpoint, tmp_path)
    (path,) = tmp_path.glob("basis-*.pt")
    TAMPERINGS[tampering](path)
    with caplog.at_level(logging.WARNING):
        engine = build(tiny_checkpoint, tmp_path)
    assert str(path) in caplog.text  # logged
    mask, score = answer(engine, scene)
    expected_mask, expected_score = answer(clean, scene)
    assert np.array_equal(mask, expected_mask) and score == expected_score
    assert torch.equal(torch.load(path, weights_only=True), engine.basis)  # rebuilt on disk


def test_a_warm_cache_is_used_and_a_clean_one_is_not_rebuilt(tiny_checkpoint: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    first = build(tiny_checkpoint, tmp_path)
    (path,) = tmp_path.glob("basis-*.pt")
    written = path.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        again = build(tiny_checkpoint, tmp_path)
    assert path.stat().st_mtime_ns == written and "rebuilding" not in caplog.text
    assert torch.equal(first.basis, again.basis)
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o077 == 0  # the signing key is private


def test_a_signing_key_others_can_read_is_not_used(tiny_checkpoint: Path, tmp_path: Path) -> None:
    build(tiny_checkpoint, tmp_path)
    (basis,) = tmp_path.glob("basis-*.pt")
    check = ("import json, sys; from pathlib import Path; from core.artifacts import read_verified; "
             "path = Path(sys.argv[1]); made_from = json.loads(path.with_suffix('.json').read_text())['made_from']; "
             "print(read_verified(path, made_from) is not None)")

    def verifies_in_a_new_process() -> tuple[bool, str]:
        done = subprocess.run([sys.executable, "-c", check, str(basis)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=True)
        return done.stdout.strip() == "True", done.stderr

    assert verifies_in_a_new_process() == (True, "")
    (tmp_path / KEY_FILE).chmod(0o644)
    verified, logged = verifies_in_a_new_process()
    assert not verified and "is not a private 32-byte key" in logged


@pytest.mark.parametrize("tampering", ["nan", "one value changed"])
def test_the_next_process_ignores_a_tampered_basis(tiny_checkpoint: Path, clean: Insid3, scene, tmp_path: Path,
                                                   tampering: str) -> None:
    """The must-show: the cached basis tampered with, then a new ``insid3 segment`` process."""
    cache = tmp_path / "cache"
    build(tiny_checkpoint, cache)
    (path,) = cache.glob("basis-*.pt")
    TAMPERINGS[tampering](path)
    image, mask = scene
    Image.fromarray(image).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    Image.fromarray(np.roll(image, 25, axis=1)).save(tmp_path / "target.png")
    done = subprocess.run(
        [*INSID3, "segment", "ref.png", "mask.png", "target.png", "--out", "out", "--model-size", "tiny",
         "--weights", str(tiny_checkpoint), "--image-size", str(SIZE), "--device", "cpu", "--runtime", "torch",
         "--basis-cache-dir", str(cache)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "rebuilding" in done.stderr and str(path) in done.stderr
    expected_mask, expected_score = answer(clean, scene)
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["score"] == round(expected_score, 4) and printed["area"] == int(expected_mask.sum())
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "target_mask.png")) > 0, expected_mask)


# ------------------------------------------------------------------------- exported encoders


def _artifact(cache: Path, pattern: str) -> Path:
    (path,) = (cache / "encoders").glob(pattern)
    return path


def test_an_onnx_export_swapped_after_its_check_is_not_what_is_loaded(
    tiny_checkpoint: Path, clean: Insid3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    build(tiny_checkpoint, tmp_path, "onnxruntime")
    onnx = _artifact(tmp_path, "encoder-*.onnx")
    load_session = runtimes.load_session

    def swap_then_load(name: str, model: str | bytes, threads: int) -> runtimes.Encoder:
        onnx.write_bytes(b"swapped in after the hash check")  # the real file changes under the loader
        return load_session(name, model, threads)

    monkeypatch.setattr(runtimes, "load_session", swap_then_load)
    engine = build(tiny_checkpoint, tmp_path, "onnxruntime")
    assert engine.runtime.name == "onnxruntime"
    images = torch.randn(2, 3, SIZE, SIZE)
    assert (engine.encode_tensor(images) - clean.encode_tensor(images)).abs().max() <= 1e-4


def test_a_forged_openvino_record_is_not_trusted(tiny_checkpoint: Path, clean: Insid3, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Another image size's compiled model put in place, its record's sha256 rewritten to match."""
    pytest.importorskip("openvino")
    build(tiny_checkpoint, tmp_path, "openvino", image_size=2 * SIZE)
    other = _artifact(tmp_path, "openvino-*.blob")
    other_bytes = other.read_bytes()
    other.rename(tmp_path / "other.blob")
    other.with_suffix(".json").unlink()
    build(tiny_checkpoint, tmp_path, "openvino")
    blob = _artifact(tmp_path, "openvino-*.blob")
    blob.write_bytes(other_bytes)
    forge_record(blob)
    with caplog.at_level(logging.WARNING):
        engine = build(tiny_checkpoint, tmp_path, "openvino")
    assert "not signed" in caplog.text
    images = torch.randn(1, 3, SIZE, SIZE)
    assert (engine.encode_tensor(images) - clean.encode_tensor(images)).abs().max() <= 1e-4
    assert blob.read_bytes() != other_bytes and read_verified(blob, json.loads(blob.with_suffix(".json").read_text())
                                                              ["made_from"])


def test_a_forged_weights_hash_memo_is_not_trusted(tiny_checkpoint: Path, clean: Insid3, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The memo names the weights every other artifact is made from: a forged one is re-hashed."""
    build(tiny_checkpoint, tmp_path)
    (memo,) = (tmp_path / "hashes").glob("weights-*.sha256")
    memo.write_text("0" * 64)
    forge_record(memo)
    with caplog.at_level(logging.WARNING):
        engine = build(tiny_checkpoint, tmp_path)
    assert "not signed" in caplog.text and engine.model_id == clean.model_id
    assert memo.read_text() == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()


def test_a_forged_parity_verdict_is_not_trusted_and_nan_features_never_pass(
    tiny_checkpoint: Path, clean: Insid3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("openvino")
    build(tiny_checkpoint, tmp_path, "openvino")
    (verdict,) = (tmp_path / "encoders").glob("parity-openvino-*.txt")
    verdict.write_text("1e9")  # a failing verdict, its record's sha256 rewritten to match
    forge_record(verdict)
    with caplog.at_level(logging.WARNING):
        assert build(tiny_checkpoint, tmp_path, "openvino").runtime.name == "openvino"  # probed again: passes
    assert "not signed" in caplog.text and float(verdict.read_text()) <= runtimes.PROBE_TOLERANCE

    def nan_features(images: torch.Tensor) -> torch.Tensor:
        return torch.full_like(clean.encode_tensor(images), float("nan"))

    assert runtimes.probe_parity("openvino", nan_features, clean.encode_tensor, SIZE, "0" * 64, None) == float("inf")
