"""``insid3 eval`` end to end with a random tiny checkpoint: every dataset, --limit, --resume, errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evaluation import runner
from evaluation.datasets import build_segmentation
from evaluation.metrics import IouMeter
from evaluation.sampling import new_rng
from insid3.cli import main


def run_eval(*args: Any) -> int:
    return main(["eval", *map(str, args)])


@pytest.fixture
def engine_args(tiny_checkpoint: Path, basis_cache: Path) -> list[str]:
    return ["--model-size", "tiny", "--weights", str(tiny_checkpoint), "--image-size", "64", "--device", "cpu"]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def evaluate(out: Path, *args: Any) -> dict[str, Any]:
    """``insid3 eval ARGS --output-dir OUT``, which must succeed; its results.json."""
    assert run_eval(*args, "--output-dir", out) == 0
    return read_json(out / "results.json")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "episodes.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "dataset", ["coco", "lvis", "pascal_part", "paco_part", "isaid", "isic", "lung", "suim", "permis"]
)
def test_segmentation_end_to_end(synthetic: Any, engine_args: list[str], tmp_path: Path, dataset: str) -> None:
    out = tmp_path / "run"
    results = evaluate(out, "--dataset", dataset, "--data-root", synthetic.root, "--limit", 5, "--batch-size", 2,
                       *engine_args)
    loader = build_segmentation(dataset, synthetic.root, 0, 1)
    assert results["episodes"] == 5 and results["dataset"] == dataset
    assert 0.0 <= results["miou"] <= 100.0
    assert [int(c) for c in results["class_iou"]] == loader.class_ids
    saved = records(out)
    rng = new_rng(0)  # --seed defaults to 0: the episodes are the loader's for that seed
    assert [(r["class_id"], r["target"], r["references"]) for r in saved] == [
        loader.episode(i, rng).draw for i in range(5)
    ]
    meter = IouMeter(loader.meter_width, loader.class_ids)
    for r in saved:
        counted = sum(r["inter"]) + sum(r["union"])  # = 2 x the pixels left in the metric
        assert counted == 2 * 64 * 64 if dataset != "isaid" else counted < 2 * 64 * 64
        meter.update(np.array(r["inter"]), np.array(r["union"]), r["class_id"])
    assert results["miou"] == pytest.approx(meter.miou())
    assert "mIoU = " in (out / "log.txt").read_text()


def test_spair_end_to_end(synthetic: Any, engine_args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "spair"
    results = evaluate(out, "--dataset", "spair", "--data-root", synthetic.root, "--debiased", "--batch-size", 3,
                       *engine_args)
    assert results["pairs"] == len(synthetic.spair) and results["debiased"] is True
    assert list(results["pck"]) == ["0.05", "0.10", "0.15", "0.20"]
    assert set(results["per_category"]) == {"aeroplane", "cat"}
    values = [r["pck"] for r in records(out)]
    assert results["pck"]["0.10"] == pytest.approx(100 * np.mean([v[1] for v in values]))
    assert all(a <= b for v in values for a, b in itertools.pairwise(v))  # PCK grows with alpha
    assert "PCK@0.10 = " in (out / "log.txt").read_text()


def test_all_folds_report_the_mean_of_the_folds(synthetic: Any, engine_args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "isaid"
    summary = evaluate(out, "--dataset", "isaid", "--data-root", synthetic.root, "--all-folds", "--limit", 3,
                       *engine_args)
    folds = [read_json(out / f"fold{f}" / "results.json") for f in range(3)]
    assert [f["fold"] for f in folds] == [0, 1, 2]
    assert summary["miou"] == pytest.approx(sum(f["miou"] for f in folds) / 3)
    assert summary["folds"]["2"]["miou"] == folds[2]["miou"]


def test_resume_after_an_interruption_matches_an_uninterrupted_run(
    synthetic: Any, engine_args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = ["--dataset", "coco", "--data-root", synthetic.root, "--limit", 9, "--batch-size", 2, *engine_args]
    assert run_eval(*common, "--output-dir", tmp_path / "full") == 0

    original = runner.predict_masks
    calls = []

    def interrupted(engine: Any, episodes: Any) -> Any:
        calls.append(len(episodes))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(engine, episodes)

    monkeypatch.setattr(runner, "predict_masks", interrupted)
    cut = tmp_path / "cut"
    assert run_eval(*common, "--output-dir", cut) == 130
    assert read_json(cut / "checkpoint.json")["next_index"] == 4
    assert not (cut / "results.json").exists()
    with open(cut / "episodes.jsonl", "a") as handle:
        handle.write('{"index": 4, "class_')  # a record torn by the interruption
    monkeypatch.setattr(runner, "predict_masks", original)
    assert run_eval(*common, "--output-dir", cut) == 2  # no silent overwrite without --resume
    assert run_eval(*common, "--output-dir", cut, "--resume") == 0
    assert read_json(cut / "results.json") == read_json(tmp_path / "full" / "results.json")
    assert records(cut) == records(tmp_path / "full")


def test_a_limited_run_can_be_extended(synthetic: Any, engine_args: list[str], tmp_path: Path) -> None:
    common = ["--dataset", "suim", "--data-root", synthetic.root, *engine_args]
    assert run_eval(*common, "--limit", 6, "--output-dir", tmp_path / "direct") == 0
    assert run_eval(*common, "--limit", 2, "--output-dir", tmp_path / "grown") == 0
    assert read_json(tmp_path / "grown" / "results.json")["episodes"] == 2
    assert run_eval(*common, "--limit", 6, "--output-dir", tmp_path / "grown", "--resume") == 0
    assert read_json(tmp_path / "grown" / "results.json") == read_json(tmp_path / "direct" / "results.json")


def test_resume_refuses_other_settings(
    synthetic: Any, engine_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--dataset", "lung", "--data-root", synthetic.root, "--limit", 2, "--output-dir", tmp_path, *engine_args]
    assert run_eval(*common) == 0
    assert run_eval(*common, "--resume", "--tau", 0.5) == 2
    assert "tau" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "coco", "--fold", 4], "--fold 4 does not exist"),
        (["--dataset", "isic", "--fold", 1], "has no folds"),
        (["--dataset", "coco", "--debiased"], "--debiased only applies"),
        (["--dataset", "coco", "--shots", 0], "--shots must be at least 1"),
        (["--dataset", "coco", "--limit", 0], "--limit must be at least 1"),
    ],
)
def test_invalid_options_are_clear_errors(
    synthetic: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[Any], message: str
) -> None:
    assert run_eval(*args, "--data-root", synthetic.root, "--output-dir", tmp_path) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("dataset", "folder"), [("coco", "COCO2014"), ("spair", "SPair-71k"), ("permis", "PerMIRS")])
def test_missing_data_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dataset: str, folder: str
) -> None:
    assert run_eval("--dataset", dataset, "--data-root", tmp_path, "--output-dir", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"missing folder {tmp_path / folder}" in err and "Traceback" not in err
    assert run_eval("--dataset", dataset, "--data-root", tmp_path / "nowhere") == 2
    assert "is not a folder" in capsys.readouterr().err


def test_eval_runs_fp32_by_default_and_its_help_says_so(capsys) -> None:
    from insid3.cli import build_parser

    assert build_parser().parse_args(["eval", "--dataset", "coco"]).precision == "fp32"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--help"])
    assert "(default: fp32, as the official evaluation runs it" in " ".join(capsys.readouterr().out.split())
