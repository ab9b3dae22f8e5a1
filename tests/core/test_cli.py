"""The insid3 command: segment, match, make-checkpoint, and errors without stack traces.

``segment`` runs as a real ``python -m insid3`` process (the console entry point, with HOME in the
test folder and the cache folder from ``INSID3_BASIS_CACHE_DIR``); make-checkpoint, match (with
--basis-cache-dir) and the error paths call ``insid3.cli.main(argv)`` in-process. The checkpoint is the
session's (same seed, same file name, so the same bytes): both commands start from the warm cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from insid3.cli import main as insid3
from tests.support.paths import REPO_ROOT

INSID3 = [sys.executable, "-m", "insid3"]


def _run(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INSID3, *args], capture_output=True, text=True, cwd=cwd, check=False,
                          env={"PYTHONPATH": str(REPO_ROOT), "HOME": str(cwd), "INSID3_BASIS_CACHE_DIR": str(cache)})


def test_make_checkpoint_segment_and_match(tmp_path: Path, scene, tiny_checkpoint: Path, basis_cache_dir: Path,
                                           monkeypatch, capsys) -> None:
    image, mask = scene
    Image.fromarray(image).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    Image.fromarray(np.roll(image, 25, axis=1)).save(tmp_path / "target.jpg")
    weights = tmp_path / "w" / tiny_checkpoint.name
    assert insid3(["make-checkpoint", "--model-size", "tiny", "--out", str(weights), "--seed", "0"]) == 0
    assert weights.read_bytes() == tiny_checkpoint.read_bytes()
    engine = ["--model-size", "tiny", "--weights", str(weights.relative_to(tmp_path)), "--image-size", "64",
              "--device", "cpu"]

    segmented = _run("segment", "ref.png", "ref_mask.png", "target.jpg", "--out", "out", *engine, cwd=tmp_path,
                     cache=basis_cache_dir)
    assert segmented.returncode == 0, segmented.stderr
    mask_out = np.asarray(Image.open(tmp_path / "out" / "target_mask.png"))
    assert mask_out.shape == (96, 160) and set(np.unique(mask_out)) <= {0, 255}
    overlay = Image.open(tmp_path / "out" / "target_overlay.png")
    assert overlay.width > overlay.height  # reference and target side by side
    assert '"area"' in segmented.stdout

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert insid3(["match", "ref.png", "target.jpg", "--point", "60,40", "--point", "10,10", "--out", "out",
                   "--basis-cache-dir", str(basis_cache_dir), *engine]) == 0
    assert capsys.readouterr().out.count("->") == 2
    assert (tmp_path / "out" / "target_matches.png").is_file()


def test_errors_are_one_clear_line_not_a_traceback(tmp_path: Path, capsys, monkeypatch) -> None:
    missing = tmp_path / "empty-pretrain"
    missing.mkdir()
    monkeypatch.chdir(tmp_path)
    for name in ("a.png", "b.png", "c.png"):  # targets that exist: the weights are what is missing
        (tmp_path / name).touch()
    assert insid3(["segment", "a.png", "b.png", "c.png", "--model-size", "small", "--device", "cpu",
                   "--pretrain-dir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "dinov3_vits16_pretrain_lvd1689m-08c60483.pth" in err
    weights = tmp_path / "t.pth"
    assert insid3(["make-checkpoint", "--model-size", "tiny", "--out", str(weights)]) == 0
    capsys.readouterr()
    too_many = insid3(["segment", "a.png", "b.png", "c.png", "--model-size", "tiny", "--weights", str(weights),
                       "--svd-components", "96", "--device", "cpu"])
    assert too_many == 2 and "svd_components=96 is impossible" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad_point:
        insid3(["match", "a.png", "b.png", "--point", "oops"])
    assert bad_point.value.code == 2 and "X,Y" in capsys.readouterr().err


def test_segment_takes_several_references_and_a_folder_of_targets(tmp_path: Path, scene, tiny_checkpoint: Path,
                                                                   basis_cache_dir: Path, capsys) -> None:
    image, mask = scene
    for name, shift in (("ref1", 0), ("ref2", 30)):
        Image.fromarray(np.roll(image, shift, axis=1)).save(tmp_path / f"{name}.png")
        Image.fromarray(np.roll(mask, shift, axis=1).astype(np.uint8) * 255).save(tmp_path / f"{name}_mask.png")
    folder = tmp_path / "targets"
    folder.mkdir()
    for name, shift in (("b", 10), ("a", 50)):
        Image.fromarray(np.roll(image, shift, axis=1)).save(folder / f"{name}.jpg")
    (folder / "notes.txt").write_text("not an image")  # left out: not an image file name
    (folder / "c.png").write_bytes(b"broken")  # an image name that does not decode: its own failure
    engine = ["--model-size", "tiny", "--weights", str(tiny_checkpoint), "--image-size", "64", "--device", "cpu",
              "--basis-cache-dir", str(basis_cache_dir), "--out", str(tmp_path / "out")]
    references = ["--reference", str(tmp_path / "ref1.png"), str(tmp_path / "ref1_mask.png"),
                  "--reference", str(tmp_path / "ref2.png"), str(tmp_path / "ref2_mask.png")]
    assert insid3(["segment", str(folder), *references, *engine]) == 1  # c.png failed
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [Path(line["target"]).name for line in lines] == ["a.jpg", "b.jpg", "c.png"]
    assert lines[2]["error"] == "invalid_image" and "mask" not in lines[2]
    assert (tmp_path / "out" / "a_mask.png").is_file() and (tmp_path / "out" / "b_overlay.png").is_file()
    assert "[1/3] a.jpg" in captured.err and "[2/3] b.jpg" in captured.err  # progress

    assert insid3(["segment", str(tmp_path / "ref1.png"), str(tmp_path / "ref1_mask.png"), str(folder / "a.jpg"),
                   *engine]) == 0  # the 1-shot positional form still works
    assert json.loads(capsys.readouterr().out)["area"] > 0
    assert insid3(["segment", str(tmp_path / "missing.jpg"), *references, *engine]) == 2
    assert "neither a file nor a folder" in capsys.readouterr().err
