"""``bench/gpu_check.py --device cpu --quick`` runs every section of the GPU check, so the script cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_in_quick_mode(parity_dir: Path, tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--quick", "--parity-dir", str(parity_dir),
         "--out", str(tmp_path / "report.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["backbone_parity"]["max_abs_vs_official"] <= 1e-4
    assert [row["identical"] for row in report["clustering"]["rows"]] == [True, True]
    assert report["bf16_masks"]["scenes"] == 2 and 0.0 <= report["bf16_masks"]["mean_iou"] <= 1.0
    assert set(report["throughput"]["encoder_images_per_s"]) == {"1", "2"}
    assert report["serve"]["requests"] > 0 and report["serve"]["errors"] == 0
    assert "| serve, 2 clients |" in completed.stdout
