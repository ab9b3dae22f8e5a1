"""A run directory that survives interruption: per-episode records, RNG states, results.

Layout of ``<run dir>``: ``run.json`` (what the run is; a resumed run must match it),
``episodes.jsonl`` (one record per finished episode, appended), ``checkpoint.json`` (the index of
the next episode and the numpy/torch RNG states after drawing everything before it, replaced
atomically after the records it covers are on disk), ``results.json`` and ``log.txt``.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.artifacts import write_atomic
from evaluation.errors import ResumeError
from evaluation.sampling import new_rng, rng_from_json, rng_state_to_json

RUN_FILE = "run.json"
RECORDS_FILE = "episodes.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
RESULTS_FILE = "results.json"
LOG_FILE = "log.txt"

Record = dict[str, Any]
Restored = tuple[np.random.RandomState, list[Record]]


def to_json(value: Any) -> str:
    """Pretty JSON with NaN/inf written as null."""

    def clean(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {str(k): clean(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v) for v in item]
        return item

    return json.dumps(clean(value), indent=2) + "\n"


def _torch_state() -> dict[str, Any]:
    state = {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [
            base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()
        ]
    return state


def _restore_torch_state(state: dict[str, Any]) -> None:
    def tensor(encoded: str) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(base64.b64decode(encoded), dtype=np.uint8).copy())

    torch.set_rng_state(tensor(state["cpu"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in state["cuda"]])


class RunDir:
    """The persistent state of one evaluation run (one dataset fold)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def log(self, message: str) -> None:
        """Append a time-stamped line to ``log.txt``."""
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        with open(self.path / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(f"[{stamp}] {message}\n")

    def has_run(self) -> bool:
        """Whether a run was started in this directory."""
        return (self.path / RUN_FILE).is_file()

    def start(self, identity: dict[str, Any], resume: bool) -> Restored:
        """Seed a new run, or restore a saved one; returns the episode RNG and the saved records.

        Seeds torch and numpy once with ``identity["seed"]``, like the official script. A saved
        run is only continued with ``resume`` and only when ``identity`` matches its own.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if self.has_run() and not resume:
            raise ResumeError(
                f"{self.path} already holds an evaluation run: pass --resume to continue it, "
                "or choose another --output-dir"
            )
        if resume and self.has_run():
            self._check_identity(identity)
            if (self.path / CHECKPOINT_FILE).is_file():
                return self._restore()
        for name in (RECORDS_FILE, CHECKPOINT_FILE, RESULTS_FILE):
            (self.path / name).unlink(missing_ok=True)
        write_atomic(self.path / RUN_FILE, to_json(identity).encode())
        torch.manual_seed(identity["seed"])
        return new_rng(identity["seed"]), []

    def _check_identity(self, identity: dict[str, Any]) -> None:
        saved = json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))
        if saved != json.loads(to_json(identity)):
            changed = sorted(k for k in saved.keys() | identity.keys() if saved.get(k) != identity.get(k))
            raise ResumeError(
                f"cannot resume {self.path}: the run was started with other settings "
                f"({', '.join(changed)} differ)"
            )

    def _restore(self) -> Restored:
        checkpoint = json.loads((self.path / CHECKPOINT_FILE).read_text(encoding="utf-8"))
        records = self._read_records(int(checkpoint["next_index"]))
        _restore_torch_state(checkpoint["torch"])
        return rng_from_json(checkpoint["rng"]), records

    def _read_records(self, done: int) -> list[Record]:
        """The first ``done`` records (later or torn lines, written after the checkpoint, dropped)."""
        path = self.path / RECORDS_FILE
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        records: list[Record] = [json.loads(line) for line in lines[:done]]
        if [r["index"] for r in records] != list(range(done)):
            raise ResumeError(
                f"cannot resume {self.path}: {RECORDS_FILE} does not hold episodes 0..{done - 1}"
            )
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode())
        return records

    def commit(self, records: list[Record], next_index: int, rng: np.random.RandomState) -> None:
        """Persist finished episodes, then the checkpoint that makes them count."""
        with open(self.path / RECORDS_FILE, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
            handle.flush()
            os.fsync(handle.fileno())
        checkpoint = {"next_index": next_index, "rng": rng_state_to_json(rng), "torch": _torch_state()}
        write_atomic(self.path / CHECKPOINT_FILE, json.dumps(checkpoint).encode())

    def write_results(self, results: dict[str, Any]) -> None:
        """Write ``results.json``."""
        write_atomic(self.path / RESULTS_FILE, to_json(results).encode())
