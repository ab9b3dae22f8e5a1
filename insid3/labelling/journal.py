"""The journal of a labelling run: an append-only JSON-lines file beside the output.

Line 1 is the job (what makes the masks: the examples' hashes, the model, tau, ...); then one
line per finished image, appended with a single ``write`` and flushed to the kernel before the next
image starts counting as done (a killed process loses nothing flushed). ``fsync`` runs at most every
``SYNC_INTERVAL_S`` and on close (group commit: a per-line fsync, ~5 ms here, would cap a fast
pool's rate): a machine crash can only lose the last moment's lines, which a resume then redoes:

    {"image": "a/b.jpg", "width": 640, "height": 480, "annotations": [{"category_id": 1, "score": 0.8,
     "area": 1234, "bbox": [x, y, w, h], "rle": {"size": [480, 640], "counts": "..."}}]}
    {"image": "broken.jpg", "error": "cannot identify image file"}

A run killed mid-line leaves at most one partial last line: reading stops before it and resuming
cuts it off. The journal is what the output is assembled from, image by image, so memory never holds
more than one image's masks; an image listed twice keeps its first line (exactly once).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import InvalidInputError

VERSION = 1
SYNC_INTERVAL_S = 0.5


def journal_path(out: Path) -> Path:
    """``OUT.journal.jsonl`` beside the output file or folder."""
    return out.parent / f"{out.name}.journal.jsonl"


def _complete_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(end offset, record) of every whole, valid line; stops at the first partial or invalid one."""
    offset = 0
    with path.open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                return
            try:
                record = json.loads(line)
            except ValueError:
                return
            offset += len(line)
            yield offset, record


def check_resumable(path: Path, resume: bool) -> None:
    """A journal left by an earlier run is continued only with ``--resume`` (checked before any model loads)."""
    if path.exists() and not resume:
        raise InvalidInputError(f"{path} exists from an earlier run: pass --resume to continue it, "
                                "or delete it to start over")


class Journal:
    """The finished images of one job, and the appending of more."""

    def __init__(self, path: Path, job: dict[str, Any], resume: bool) -> None:
        """Open (``resume``: continue the journal of the same job) or start the journal at ``path``."""
        self.path = path
        self.done: set[str] = set()
        self._synced = 0.0
        check_resumable(path, resume)
        if resume and path.exists():
            self._reopen(job)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("wb")
            self._append({"version": VERSION, "job": job})

    def _reopen(self, job: dict[str, Any]) -> None:
        end = 0
        for index, (offset, record) in enumerate(_complete_lines(self.path)):
            end = offset
            if index == 0:
                _check_job(self.path, record.get("job"), job)
            else:
                self.done.add(record["image"])
        if end == 0:
            raise InvalidInputError(f"{self.path} is not a labelling journal: delete it to start over")
        self._handle = self.path.open("r+b")
        self._handle.truncate(end)  # a line cut short by a kill
        self._handle.seek(end)

    def _append(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._handle.flush()
        if time.monotonic() - self._synced >= SYNC_INTERVAL_S:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._handle.fileno())
        self._synced = time.monotonic()

    def add(self, record: dict[str, Any]) -> None:
        """Record one finished image (labelled, or failed with an ``error``) durably, once."""
        if record["image"] in self.done:
            return
        self._append(record)
        self.done.add(record["image"])

    def close(self) -> None:
        self._sync()
        self._handle.close()


def _check_job(path: Path, recorded: dict[str, Any] | None, job: dict[str, Any]) -> None:
    if recorded is None:
        raise InvalidInputError(f"{path} is not a labelling journal: delete it to start over")
    differing = sorted(key for key in recorded.keys() | job.keys() if recorded.get(key) != job.get(key))
    if differing:
        raise InvalidInputError(f"{path} was made with other settings ({', '.join(differing)} differ): "
                                "run with the same ones, or delete it to start over")


def records(path: Path) -> Iterator[dict[str, Any]]:
    """The image records of a journal in order, each image once (its first record)."""
    seen: set[str] = set()
    for index, (_, record) in enumerate(_complete_lines(path)):
        if index and record["image"] not in seen:
            seen.add(record["image"])
            yield record
