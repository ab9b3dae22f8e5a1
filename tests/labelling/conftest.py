"""Fixtures of the client and labelling tests: folders of disc scenes with a known answer, the
tiny random checkpoint's engine options, and a real ``insid3 serve`` whose queue holds one job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.conftest import Server, tiny_args
from tests.support.images import BLUE, disc_scene
from tests.support.processes import wait_ready

IMAGE_SIZE = 64
BROKEN = "broken.jpg"


def write_scene(folder: Path, name: str, seed: int, height: int = 90, width: int = 110, blue: bool = False) -> None:
    """A red disc (and, with ``blue``, a blue one) on clutter, as ``folder/name``."""
    scene = disc_scene(seed, height, width, [(height // 2, width // 3, height // 5)], clutter=4)
    if blue:
        blue_disc = disc_scene(seed, height, width, [(height // 2, 3 * width // 4, height // 6)], colour=BLUE)
        scene.image[blue_disc.mask] = BLUE
    (folder / name).write_bytes(scene.png)


def write_example(folder: Path, name: str, seed: int, colour=None) -> tuple[Path, Path]:
    """An example image and its mask (a disc of ``colour``, red by default)."""
    scene = disc_scene(seed, 100, 120, [(50, 60, 22)], **({"colour": colour} if colour else {}))
    image, mask = folder / f"{name}.png", folder / f"{name}_mask.png"
    image.write_bytes(scene.png)
    mask.write_bytes(scene.mask_png)
    return image, mask


def make_folder(root: Path, count: int, broken: bool = True, blue: bool = False) -> Path:
    """``count`` scenes of varied sizes in ``root/images`` (one in a sub-folder), and a broken JPEG."""
    folder = root / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        where = "sub/" if i == count - 1 else ""
        write_scene(folder, f"{where}img{i:03d}.png", 100 + i, 80 + 3 * (i % 7), 100 + 5 * (i % 5), blue)
    if broken:
        (folder / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def engine_args(checkpoint: Path) -> list[str]:
    """``insid3 label``/``tune`` engine options for the tiny checkpoint (the worker tests' image size)."""
    return tiny_args(checkpoint, IMAGE_SIZE)


def journal_records(path: Path) -> list[dict]:
    """The image lines of a journal (the header left out)."""
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Path, Path]]]:
    """Two red-disc examples and one blue-disc example."""
    folder = tmp_path_factory.mktemp("examples")
    return {"red": [write_example(folder, "red1", 1), write_example(folder, "red2", 2)],
            "blue": [write_example(folder, "blue1", 3, BLUE)]}


@pytest.fixture(scope="module")
def busy_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``insid3 serve`` (embedded engine) that queues one job at a time and holds a job 200 ms for its
    batch to fill: concurrent calls meet 503 queue_full with Retry-After."""
    server = Server(tmp_path_factory.mktemp("serve"),
                    [*engine_args(tiny_checkpoint), "--max-queue", "1", "--max-wait-ms", "200"], {})
    try:
        wait_ready(server.url, server.process)
        yield server
    finally:
        server.process.stop()
