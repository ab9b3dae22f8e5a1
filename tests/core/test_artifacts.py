"""Atomic writes make files with the permissions of any other file the process writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from core.artifacts import make_atomic, write_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_follow_the_umask_not_mkstemps_0600(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "a.json", b"{}")
        make_atomic(tmp_path / "b.onnx", lambda scratch: scratch.write_bytes(b"model"))
    finally:
        os.umask(previous)
    for name in ("a.json", "b.onnx"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.onnx"]  # no scratch file left


def test_a_failed_make_leaves_neither_the_file_nor_a_scratch_file(tmp_path: Path) -> None:
    def fail(scratch: Path) -> None:
        scratch.write_bytes(b"half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        make_atomic(tmp_path / "c.onnx", fail)
    assert list(tmp_path.iterdir()) == []
