"""The insid3 command: segment, match, make-checkpoint, and errors without stack traces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

INSID3 = [sys.executable, "-m", "insid3"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INSID3, *args], capture_output=True, text=True, cwd=cwd, check=False,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "HOME": str(cwd)})


def test_make_checkpoint_segment_and_match(tmp_path: Path, scene) -> None:
    image, mask = scene
    Image.fromarray(image).save(tmp_path / "ref.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "ref_mask.png")
    Image.fromarray(np.roll(image, 25, axis=1)).save(tmp_path / "target.jpg")
    made = _run("make-checkpoint", "--model-size", "tiny", "--out", "w/tiny.pth", "--seed", "1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    engine = ["--model-size", "tiny", "--weights", "w/tiny.pth", "--image-size", "64", "--device", "cpu"]

    segmented = _run("segment", "ref.png", "ref_mask.png", "target.jpg", "--out", "out", *engine, cwd=tmp_path)
    assert segmented.returncode == 0, segmented.stderr
    mask_out = np.asarray(Image.open(tmp_path / "out" / "target_mask.png"))
    assert mask_out.shape == (96, 160) and set(np.unique(mask_out)) <= {0, 255}
    overlay = Image.open(tmp_path / "out" / "target_overlay.png")
    assert overlay.width > overlay.height  # reference and target side by side
    assert '"area"' in segmented.stdout

    matched = _run("match", "ref.png", "target.jpg", "--point", "60,40", "--point", "10,10", "--out", "out",
                   *engine, cwd=tmp_path)
    assert matched.returncode == 0, matched.stderr
    assert matched.stdout.count("->") == 2
    assert (tmp_path / "out" / "target_matches.png").is_file()


def test_errors_are_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    missing = _run("segment", "a.png", "b.png", "c.png", "--model-size", "small", "--device", "cpu", cwd=tmp_path)
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "dinov3_vits16_pretrain_lvd1689m-08c60483.pth" in missing.stderr
    impossible = _run("make-checkpoint", "--model-size", "tiny", "--out", "t.pth", cwd=tmp_path)
    assert impossible.returncode == 0
    too_many = _run("segment", "a.png", "b.png", "c.png", "--model-size", "tiny", "--weights", "t.pth",
                    "--svd-components", "96", "--device", "cpu", cwd=tmp_path)
    assert too_many.returncode == 2 and "svd_components=96 is impossible" in too_many.stderr
    bad_point = _run("match", "a.png", "b.png", "--point", "oops", cwd=tmp_path)
    assert bad_point.returncode == 2 and "X,Y" in bad_point.stderr
