"""``insid3 tune`` on disc scenes where the right tau is known: at tau 0 every patch merges into one
cluster, so the whole image is predicted (IoU = the disc's share of the image, exactly); at 0.6 the
disc stays apart from the clutter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.engine import Insid3
from insid3.cli import main as insid3
from insid3.labelling.sources import Example
from insid3.labelling.tune import grid_search, iou
from tests.labelling.conftest import IMAGE_SIZE, engine_args, make_folder
from tests.support.images import disc_scene

DISCS = [(50, 60, 22), (60, 80, 25), (45, 50, 20), (70, 70, 24)]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[tuple[Path, Path, np.ndarray]]:
    folder = tmp_path_factory.mktemp("tune")
    made = []
    for i, disc in enumerate(DISCS):
        scene = disc_scene(200 + i, 120, 140, [disc])
        image, mask = folder / f"i{i}.png", folder / f"m{i}.png"
        image.write_bytes(scene.png)
        mask.write_bytes(scene.mask_png)
        made.append((image, mask, scene.mask))
    return made


def test_the_grid_finds_the_tau_that_keeps_the_disc_apart(tiny_checkpoint, basis_cache_dir, scenes) -> None:
    engine = Insid3.build(model_size="tiny", weights=str(tiny_checkpoint), image_size=IMAGE_SIZE, device="cpu",
                          basis_cache_dir=basis_cache_dir)
    examples = [Example(image, mask) for image, mask, _ in scenes]
    whole, apart = grid_search(engine, examples, [0.0, 0.6], [0.2])
    shares = [float(mask.mean()) for _, _, mask in scenes]
    assert np.allclose(whole.ious, shares)  # one cluster: the whole image
    assert apart.miou > 2 * whole.miou
    # the features encoded once give what segmenting each example from its files gives
    for held, (image, _, mask) in enumerate(scenes):
        references = [engine.encode_reference(i, m) for k, (i, m, _) in enumerate(scenes) if k != held]
        assert apart.ious[held] == iou(engine.segment(image, references, 0.6, 0.2).mask, mask)


def test_tune_prints_the_best_and_label_uses_it(tiny_checkpoint, scenes, tmp_path, capsys) -> None:
    saved = tmp_path / "params.json"
    args = [arg for image, mask, _ in scenes[:3] for arg in ("--example", str(image), str(mask))]
    assert insid3(["tune", *args, "--tau-grid", "0,0.6", "--merge-grid", "0.2,0.3", "--save", str(saved),
                   *engine_args(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("tau") and len([line for line in out if line.startswith(("0 ", "0.6 "))]) == 4
    assert out[-1].startswith("best tau=0.6 merge_threshold=0.")
    choice = json.loads(saved.read_text())
    assert choice["tau"] == 0.6 and f"mIoU={choice['miou']:.4f}" in out[-1]

    folder = make_folder(tmp_path, 2, broken=False)
    image, mask, _ = scenes[0]
    assert insid3(["label", "--reference", str(image), str(mask), "--images", str(folder), "--out",
                   str(tmp_path / "l.json"), "--params", str(saved), *engine_args(tiny_checkpoint)]) == 0
    job = json.loads((tmp_path / "l.json.journal.jsonl").read_text().splitlines()[0])["job"]
    assert (job["tau"], job["merge_threshold"]) == (0.6, choice["merge_threshold"])


def test_tune_needs_two_examples(tiny_checkpoint, scenes, capsys) -> None:
    image, mask, _ = scenes[0]
    assert insid3(["tune", "--example", str(image), str(mask), *engine_args(tiny_checkpoint)]) == 2
    assert "at least two" in capsys.readouterr().err
