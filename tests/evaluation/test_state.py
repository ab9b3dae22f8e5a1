"""The run directory: what a resumed run restores, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.errors import ResumeError
from evaluation.state import RunDir

IDENTITY = {"dataset": "coco", "fold": 0, "seed": 4, "tau": 0.6}


def test_a_resumed_run_continues_both_random_streams(tmp_path: Path) -> None:
    rng, records = RunDir(tmp_path).start(IDENTITY, resume=False)
    assert records == []
    rng.permutation(30)
    torch.rand(3)
    RunDir(tmp_path).commit([{"index": 0}, {"index": 1}], 2, rng)
    expected_numpy, expected_torch = rng.permutation(30).tolist(), torch.rand(3)

    restored, records = RunDir(tmp_path).start(IDENTITY, resume=True)
    assert records == [{"index": 0}, {"index": 1}]
    assert restored.permutation(30).tolist() == expected_numpy
    assert torch.equal(torch.rand(3), expected_torch)


def test_records_after_the_checkpoint_are_dropped(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    rng, _ = run.start(IDENTITY, resume=False)
    run.commit([{"index": 0}], 1, rng)
    with open(tmp_path / "episodes.jsonl", "a") as handle:
        handle.write('{"index": 1}\n{"ind')
    _, records = RunDir(tmp_path).start(IDENTITY, resume=True)
    assert records == [{"index": 0}]
    assert (tmp_path / "episodes.jsonl").read_text() == '{"index": 0}\n'


def test_a_run_interrupted_before_its_first_checkpoint_starts_over(tmp_path: Path) -> None:
    RunDir(tmp_path).start(IDENTITY, resume=False)
    (tmp_path / "episodes.jsonl").write_text('{"index": 0, "cl')
    rng, records = RunDir(tmp_path).start(IDENTITY, resume=True)
    assert records == [] and not (tmp_path / "episodes.jsonl").exists()
    assert rng.randint(1000) == np.random.RandomState(4).randint(1000)


def test_other_settings_or_no_resume_flag_are_refused(tmp_path: Path) -> None:
    RunDir(tmp_path).start(IDENTITY, resume=False)
    with pytest.raises(ResumeError, match="tau differ"):
        RunDir(tmp_path).start({**IDENTITY, "tau": 0.5}, resume=True)
    with pytest.raises(ResumeError, match="--resume"):
        RunDir(tmp_path).start(IDENTITY, resume=False)


def test_resume_without_a_saved_run_starts_one(tmp_path: Path) -> None:
    _, records = RunDir(tmp_path / "new").start(IDENTITY, resume=True)
    assert records == [] and (tmp_path / "new" / "run.json").is_file()
