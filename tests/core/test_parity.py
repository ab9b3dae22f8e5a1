"""The official golden data is reproduced, and the parity runner notices a wrong answer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.parity import run, same_partition


def test_parity_runner_passes_on_the_shared_golden_data(parity_dir: Path, capsys) -> None:
    assert run(parity_dir) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 9
    assert all(line.endswith(": ok") for line in lines)


def test_python_m_core_parity_accepts_any_folder_of_cases(parity_dir: Path, tmp_path: Path) -> None:
    shutil.copy(parity_dir / "insid3" / "case7_keypoints.npz", tmp_path)
    completed = subprocess.run(
        [sys.executable, "-m", "core.parity", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.strip().splitlines() == ["case7_keypoints: ok"]


def test_parity_runner_reports_a_changed_expected_mask(parity_dir: Path, tmp_path: Path, capsys) -> None:
    with np.load(parity_dir / "insid3" / "case1_oneshot_easy.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["pred_mask"] = arrays["pred_mask"].copy()
    arrays["pred_mask"][0, 0] = ~arrays["pred_mask"][0, 0]
    np.savez(tmp_path / "case1_mutated.npz", **arrays)
    assert run(tmp_path) == 1
    output = capsys.readouterr().out
    assert output.startswith("case1_mutated: FAIL") and "pred_mask: 1 of" in output


def test_parity_runner_reports_a_changed_backbone_feature(parity_dir: Path, tmp_path: Path, capsys) -> None:
    for name in ("configs.json", "inputs.npz", "tiny_vits16.pth"):
        shutil.copy(parity_dir / "backbone" / name, tmp_path / name)
    with np.load(parity_dir / "backbone" / "expected_vits16.npz") as data:  # two of its features
        arrays = {key: data[key] for key in ("x224__n1", "x224__n1_cls")}
    arrays["x224__n1"] = arrays["x224__n1"] + 1e-3
    np.savez(tmp_path / "expected_vits16.npz", **arrays)
    assert run(tmp_path) == 1
    output = capsys.readouterr().out
    assert "x224__n1 max abs diff" in output and "x224__n1_cls" not in output


def test_same_partition_ignores_numbering_but_not_grouping() -> None:
    assert same_partition(np.array([0, 0, 1, 2]), np.array([5, 5, 3, 9]))
    assert not same_partition(np.array([0, 0, 1, 2]), np.array([5, 5, 5, 9]))
    assert not same_partition(np.array([0, 1, 1, 2]), np.array([5, 5, 3, 9]))


def test_insid3_parity_runs_the_backbone_features_through_a_chosen_runtime(parity_dir: Path, tmp_path: Path,
                                                                            capsys) -> None:
    from insid3.cli import main as insid3

    with pytest.raises(SystemExit):
        insid3(["parity", "--help"])
    assert "--runtime {torch,onnxruntime,openvino}" in capsys.readouterr().out
    for name in ("configs.json", "inputs.npz", "tiny_vits16.pth"):
        shutil.copy(parity_dir / "backbone" / name, tmp_path / name)
    with np.load(parity_dir / "backbone" / "expected_vits16.npz") as data:
        np.savez(tmp_path / "expected_vits16.npz", x224__n1=data["x224__n1"] + 1e-3)  # a wrong expected feature
    assert insid3(["parity", str(tmp_path), "--runtime", "onnxruntime"]) == 1
    assert "x224__n1 (onnxruntime) max abs diff" in capsys.readouterr().out  # computed through that runtime
