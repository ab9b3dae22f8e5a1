"""``insid3 label`` in-process: killed with SIGKILL mid-run then resumed, the output holds every
readable image exactly once; bad inputs are one clear line each."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from insid3.cli import main as insid3
from tests.labelling.conftest import BROKEN, engine_args, journal_records, make_folder
from tests.support.net import eventually
from tests.support.processes import Process

IMAGES = 40


def _label_args(checkpoint: Path, examples, folder: Path, out: Path, *extra: str) -> list[str]:
    [(image, mask), (image_2, mask_2)] = examples["red"]
    return ["label", "--reference", str(image), str(mask), "--reference", str(image_2), str(mask_2),
            "--category", "disc", "--images", str(folder), "--out", str(out), *engine_args(checkpoint), *extra]


def _labelled_lines(journal: Path) -> int:
    return max(0, journal.read_bytes().count(b"\n") - 1) if journal.exists() else 0


def test_kill_9_then_resume_labels_every_readable_image_exactly_once(tiny_checkpoint, examples, tmp_path) -> None:
    folder = make_folder(tmp_path, IMAGES)
    out = tmp_path / "labels.json"
    journal = tmp_path / "labels.json.journal.jsonl"
    first = Process.insid3(_label_args(tiny_checkpoint, examples, folder, out), tmp_path / "first.log")
    eventually(lambda: first.check_alive() or _labelled_lines(journal) >= 1, what="the first journal line",
               interval_s=0.001)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    before = journal_records(journal)  # whole lines only: a line cut short is not counted
    assert 1 <= len(before) < IMAGES + 1
    assert not out.exists()  # assembled only at the end: never a file a tool can't load

    resumed = Process.insid3([*_label_args(tiny_checkpoint, examples, folder, out), "--resume"],
                             tmp_path / "resumed.log")
    assert resumed.wait(300) == 1, resumed.output()  # a file failed: non-zero
    after = journal_records(journal)
    assert after[:len(before)] == before  # nothing finished was redone
    assert sorted(r["image"] for r in after) == sorted({r["image"] for r in after})  # each image once

    coco = COCO(str(out))
    names = [image["file_name"] for image in coco.imgs.values()]
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("img*.png"))
    assert sorted(names) == expected and len(names) == len(set(names)) == IMAGES and BROKEN not in names
    assert [c["name"] for c in coco.cats.values()] == ["disc"]
    for annotation in coco.anns.values():
        image = coco.imgs[annotation["image_id"]]
        with Image.open(folder / image["file_name"]) as original:
            assert (image["width"], image["height"]) == original.size
        assert coco.annToMask(annotation).shape == (image["height"], image["width"])
    assert len(coco.anns) > 0
    report = json.loads((tmp_path / "labels.json.report.json").read_text())
    assert [f["image"] for f in report["failed"]] == [BROKEN] and report["labelled"] == IMAGES
    assert BROKEN in resumed.output() and "failed" in resumed.output()


def test_a_finished_run_is_resumed_without_labelling_anything(tiny_checkpoint, examples, tmp_path, capsys) -> None:
    folder = make_folder(tmp_path, 3, broken=False)
    out = tmp_path / "labels.json"
    args = _label_args(tiny_checkpoint, examples, folder, out)
    assert insid3(args) == 0
    journal = (tmp_path / "labels.json.journal.jsonl").read_text()
    assert insid3(args) == 2  # a journal exists: --resume or delete it
    assert "--resume" in capsys.readouterr().err
    assert insid3([*args, "--resume"]) == 0
    assert (tmp_path / "labels.json.journal.jsonl").read_text() == journal
    assert "0 this run" in capsys.readouterr().err
    assert insid3([*args, "--resume", "--tau", "0.3"]) == 2  # other settings: not the same job
    assert "tau" in capsys.readouterr().err


def _one_line_error(capsys, args: list[str]) -> str:
    assert insid3(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("insid3 label: error: "), err
    return err


@pytest.fixture
def scene_folder(tmp_path) -> Path:
    return make_folder(tmp_path, 2, broken=False)


def test_bad_inputs_are_one_clear_line_each(tiny_checkpoint, examples, scene_folder, tmp_path, capsys) -> None:
    image, mask = examples["red"][0]
    common = ["--images", str(scene_folder), "--out", str(tmp_path / "o.json"), *engine_args(tiny_checkpoint)]
    missing = tmp_path / "missing_mask.png"
    assert str(missing) in _one_line_error(capsys, ["label", "--reference", str(image), str(missing), *common])
    other_size = tmp_path / "small_mask.png"
    Image.new("L", (30, 20), 255).save(other_size)
    err = _one_line_error(capsys, ["label", "--reference", str(image), str(other_size), *common])
    assert "30x20" in err and "120x100" in err
    (tmp_path / "empty").mkdir()
    err = _one_line_error(capsys, ["label", "--reference", str(image), str(mask), "--images", str(tmp_path / "empty"),
                                   "--out", str(tmp_path / "o.json")])
    assert "no images found" in err
    err = _one_line_error(capsys, ["label", "--reference", str(image), str(mask), "--format", "xml", *common])
    assert "unknown format 'xml'" in err and "coco" in err
    empty_mask = tmp_path / "empty_mask.png"
    Image.new("L", (120, 100), 0).save(empty_mask)
    assert "empty" in _one_line_error(capsys, ["label", "--reference", str(image), str(empty_mask), *common])
