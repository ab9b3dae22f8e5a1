"""A labelling job: the images not labelled yet go through a labeller (the engine in this process,
or a service through the client), each finished image into the journal, then the output is
assembled from the journal and a summary and a report of the failures are written."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from app.masks import encode_rle, split_instances
from core.artifacts import write_atomic
from core.errors import Insid3Error, InvalidInputError
from core.types import mask_bbox
from insid3.labelling.journal import Journal, journal_path, records
from insid3.labelling.sources import Example, Target
from insid3.labelling.writers import WRITERS

if TYPE_CHECKING:
    from core.engine import Insid3
    from core.types import ModelInput, ReferenceFeatures

T = TypeVar("T")
R = TypeVar("R")
Record = dict[str, Any]
Sink = Callable[[Record], None]
SHOWN_FAILURES = 20


class Labeller(Protocol):
    """Turns images into journal records: ``model`` names what makes the masks (model@image_size)."""

    model: str

    def label(self, targets: Sequence[Target], sink: Sink) -> None:
        """Call ``sink`` once per target with its record (``error``: it failed; ``transient``: retry later)."""


@dataclass
class Job:
    """What to label, with what, and where the output goes."""

    categories: dict[str, list[Example]]
    targets: list[Target]
    out: Path
    fmt: str
    tau: float | None = None
    merge_threshold: float | None = None
    instances: bool = False
    resume: bool = False
    image_url: str = ""

    def fingerprint(self, model: str) -> dict[str, Any]:
        """What decides the masks: a journal of another fingerprint is not resumed."""
        return {"model": model, "tau": self.tau, "merge_threshold": self.merge_threshold,
                "instances": self.instances,
                "examples": {name: [e.digest() for e in items] for name, items in self.categories.items()}}


def mask_annotations(mask: np.ndarray, score: float, category_id: int, instances: bool) -> list[dict[str, Any]]:
    """The journal's annotations of one category's mask: the whole mask, or one per connected instance."""
    parts = split_instances(mask) if instances else [mask] if mask.any() else []
    return [{"category_id": category_id, "score": score, "area": int(part.sum()),
             "bbox": list(mask_bbox(part) or (0, 0, 0, 0)), "rle": encode_rle(part)} for part in parts]


def target_record(target: Target, width: int, height: int, annotations: list[dict[str, Any]]) -> Record:
    return {"image": target.name, "path": str(target.path.resolve()), "width": width, "height": height,
            "annotations": annotations}


def failed_record(target: Target, error: str, transient: bool = False) -> Record:
    record = {"image": target.name, "path": str(target.path.resolve()), "error": error}
    return {**record, "transient": True} if transient else record


def prefetched(items: Iterable[T], load: Callable[[T], R], depth: int) -> Iterator[tuple[T, Future[R]]]:
    """``(item, future of load(item))`` in order, loading up to ``depth`` items ahead on a thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        window: list[tuple[T, Future[R]]] = []
        for item in items:
            window.append((item, pool.submit(load, item)))
            if len(window) > depth:
                yield window.pop(0)
        yield from window


class LocalLabeller:
    """The engine in this process: the examples encoded once, the targets decoded ahead on a thread
    and encoded ``encoder_batch_size`` at a time, each category's pipeline on the shared features."""

    def __init__(self, engine: Insid3, job: Job) -> None:
        self.engine = engine
        self.job = job
        self.model = f"{engine.model_id}@{engine.image_size}"
        self.references: list[list[ReferenceFeatures]] = [
            [self._encode(example) for example in items] for items in job.categories.values()]

    def _encode(self, example: Example) -> ReferenceFeatures:
        try:
            return self.engine.encode_reference(example.image, example.mask)
        except Insid3Error as exc:
            raise InvalidInputError(f"reference {example.image} with mask {example.mask}: {exc.detail}") from None

    def _decode(self, target: Target) -> ModelInput | Exception:
        from core.images import load_image

        try:
            return self.engine.model_input(load_image(target.path, self.engine.options.max_pixels))
        except (Insid3Error, OSError) as exc:
            return exc

    def label(self, targets: Sequence[Target], sink: Sink) -> None:
        step = self.engine.options.encoder_batch_size
        batch: list[tuple[Target, ModelInput]] = []
        for target, future in prefetched(targets, self._decode, depth=2 * step):
            decoded = future.result()
            if isinstance(decoded, Exception):
                sink(failed_record(target, getattr(decoded, "detail", None) or str(decoded)))
                continue
            batch.append((target, decoded))
            if len(batch) == step:
                self._segment(batch, sink)
                batch = []
        if batch:
            self._segment(batch, sink)

    def _segment(self, batch: list[tuple[Target, ModelInput]], sink: Sink) -> None:
        encoded = self.engine.encode_inputs([item for _, item in batch])
        for (target, _), features in zip(batch, encoded, strict=True):
            height, width = features.original_size
            annotations = []
            for category_id, references in enumerate(self.references, start=1):
                result = self.engine.segment_encoded(features, references, self.job.tau, self.job.merge_threshold)
                annotations += mask_annotations(result.mask, result.score, category_id, self.job.instances)
            sink(target_record(target, width, height, annotations))


@dataclass
class Tally:
    """What this run did, for the progress bar and the summary."""

    progress: tqdm
    labelled: int = 0
    transient: list[Record] = field(default_factory=list)

    def __call__(self, record: Record, journal: Journal) -> None:
        if record.get("transient"):
            self.transient.append(record)
        else:
            journal.add(record)
            self.labelled += "error" not in record
        self.progress.update(1)


def run(job: Job, labeller: Labeller) -> int:
    """Label what the journal lacks, assemble the output, report; exit status 1 when an image failed."""
    started = time.monotonic()
    journal = Journal(journal_path(job.out), job.fingerprint(labeller.model), job.resume)
    remaining = [target for target in job.targets if target.name not in journal.done]
    progress = tqdm(total=len(job.targets), initial=len(job.targets) - len(remaining), unit="img",
                    file=sys.stderr, mininterval=1.0, dynamic_ncols=True, desc="labelling")
    tally = Tally(progress)
    try:
        labeller.label(remaining, lambda record: tally(record, journal))
    finally:
        progress.close()
        journal.close()
    WRITERS[job.fmt](job.out, journal.path, list(job.categories), job.image_url)
    return _summarise(job, journal.path, tally, time.monotonic() - started)


def _summarise(job: Job, journal: Path, tally: Tally, seconds: float) -> int:
    """The summary on stderr and ``OUT.report.json``; the exit status."""
    labelled, annotations, failed = 0, 0, []
    for record in records(journal):
        if "error" in record:
            failed.append({"image": record["image"], "error": record["error"]})
        else:
            labelled += 1
            annotations += len(record["annotations"])
    not_labelled = [{"image": r["image"], "error": r["error"]} for r in tally.transient]
    report = job.out.parent / f"{job.out.name}.report.json"
    write_atomic(report, json.dumps({"output": str(job.out), "format": job.fmt, "labelled": labelled,
                                     "annotations": annotations, "failed": failed,
                                     "not_labelled": not_labelled}, indent=1).encode())
    rate = tally.labelled / seconds if seconds > 0 else 0.0
    lines = [f"insid3 label: {labelled} images labelled ({tally.labelled} this run, {rate:.2f} images/s), "
             f"{annotations} annotations -> {job.out} ({job.fmt})"]
    problems = [*failed, *not_labelled]
    lines += [f"  failed: {item['image']}: {item['error']}" for item in problems[:SHOWN_FAILURES]]
    if len(problems) > SHOWN_FAILURES:
        lines.append(f"  ... and {len(problems) - SHOWN_FAILURES} more")
    if failed:
        lines.append(f"{len(failed)} image(s) could not be read: see {report}")
    if not_labelled:
        lines.append(f"{len(not_labelled)} image(s) not labelled (service errors): run again with --resume")
    print("\n".join(lines), file=sys.stderr)
    return 1 if problems else 0
