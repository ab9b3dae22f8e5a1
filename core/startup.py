"""How this process's start is going: named phases with their times, and what the warm-up measured.

The engine build marks its phases (weights, clustering kernel, encoder runtime, torch model,
positional basis); each is logged when it starts and ends, with its time, and ``/readyz`` shows the
running one while the model loads. A serving process (``insid3 serve``, ``insid3 worker``) also asks
for a warm-up: once the engine is built, one synthetic target is segmented, its latency is
measured, and when the request deadline can't be met the start says so with the figure and what
to do; an unset deadline is raised to ``DEADLINE_MULTIPLE`` times the measured latency.

One start per process, so the progress is the process's (``PROGRESS``); tests make their own.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from core.engine import Insid3

log = logging.getLogger("insid3.start")

DEADLINE_MULTIPLE = 4  # a request with an inline reference encodes 2 images, and may wait for one batch ahead


@dataclass
class Phase:
    """One step of the start; ``seconds`` is None while it runs."""

    name: str
    detail: str
    started: float
    seconds: float | None = None
    failed: bool = False


@dataclass(frozen=True)
class Deadline:
    """The request deadline the warm-up checks: its value and whether the user chose it."""

    seconds: float
    explicit: bool


class StartupProgress:
    """The phases of one start, logged as they go; thread-safe (the build runs in a worker thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: list[Phase] = []
        self.began = time.monotonic()
        self.deadline: Deadline | None = None  # set by serving processes: warm up and check it
        self.latency_s: float | None = None
        self.deadline_s: float | None = None  # the deadline to apply when the user chose none
        self.advice: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[None]:
        """Time one phase: logged at its start and end; a failure is logged with its time and re-raised."""
        current = Phase(name, detail, time.monotonic())
        with self._lock:
            self._phases.append(current)
        log.info("%s%s ...", name, f" ({detail})" if detail else "")
        try:
            yield
        except BaseException:
            current.failed = True
            raise
        finally:
            current.seconds = time.monotonic() - current.started
            log.info("%s %s in %.1f s", name, "failed" if current.failed else "done", current.seconds)

    def running(self) -> dict[str, object] | None:
        """The phase running now and those done (for ``/readyz``); None when no phase runs."""
        with self._lock:
            phases = list(self._phases)
        if not phases or phases[-1].seconds is not None:
            return None
        now = time.monotonic()
        current = phases[-1]
        return {
            "phase": current.name, "detail": current.detail, "phase_s": round(now - current.started, 1),
            "elapsed_s": round(now - self.began, 1),
            "done": [{"phase": p.name, "seconds": round(p.seconds or 0.0, 1)} for p in phases[:-1]],
        }

    def summary(self) -> str:
        """One line: every phase with its time."""
        with self._lock:
            phases = list(self._phases)
        return ", ".join(f"{p.name} {p.seconds:.1f} s" if p.seconds is not None else f"{p.name} (running)"
                         for p in phases)

    def expect(self, deadline_s: float, explicit: bool) -> None:
        """Ask for a warm-up once the engine is built, checking ``deadline_s`` (explicit: the user's)."""
        self.deadline = Deadline(deadline_s, explicit)

    def engine_built(self, engine: Insid3) -> None:
        """After the build: the warm-up, when a serving process asked for one."""
        if self.deadline is None:
            return
        with self.phase("warm-up", "segmenting one synthetic target to measure its latency"):
            self.latency_s = measure_target_latency(engine)
        advice = advise(self.latency_s, self.deadline, engine)
        self.advice, self.deadline_s = advice.message, advice.deadline_s
        log.log(logging.INFO if advice.met else logging.WARNING, "%s", advice.message)
        log.info("ready in %.1f s (%s)", time.monotonic() - self.began, self.summary())


def measure_target_latency(engine: Insid3) -> float:
    """Seconds to segment one target at the engine's image size with a cached reference (one encoder pass)."""
    from core.images import mask_to_tensor
    from core.pipeline import downsample_mask
    from core.types import ReferenceFeatures

    size = engine.image_size
    rows, cols = np.mgrid[:size, :size]
    pixels = np.stack([rows * 255 // size, cols * 255 // size, np.full_like(rows, 128)], axis=-1)
    mask = (rows - size / 2) ** 2 + (cols - size / 3) ** 2 < (size / 5) ** 2
    start = time.perf_counter()
    [encoded] = engine.encode_decoded([Image.fromarray(pixels.astype(np.uint8))])
    height, width = encoded.grid
    reference = ReferenceFeatures(  # the target's own features: no second encoder pass, nothing cached
        key="warm-up", model_id=engine.model_id, image_size=size, original_size=encoded.original_size,
        features=encoded.features, debiased=encoded.debiased, mask_area=int(mask.sum()),
        mask=downsample_mask(mask_to_tensor(mask, size).to(engine.device), height, width),
    )
    engine.segment_encoded(encoded, [reference])
    return time.perf_counter() - start


@dataclass(frozen=True)
class Advice:
    """What the measured latency means for the deadline."""

    message: str
    met: bool
    deadline_s: float | None = None  # the deadline to apply instead of an unset one


def advise(latency_s: float, deadline: Deadline, engine: Insid3) -> Advice:
    """The advice for ``latency_s`` against ``deadline``; an unset deadline that can't be met is raised."""
    measured = (f"one target took {latency_s:.1f} s on this machine ({engine.model_id} at "
                f"{engine.image_size} on {engine.device}, runtime {engine.runtime.name})")
    needed = latency_s * DEADLINE_MULTIPLE
    if needed <= deadline.seconds:
        return Advice(f"{measured}: the {deadline.seconds:g} s request deadline leaves room", met=True)
    faster = ("For faster answers: a smaller --image-size (512 has a quarter of the pixels of 1024 and "
              "encodes 4-8x faster) or a smaller --model-size (small, base)")
    if deadline.explicit:
        return Advice(f"{measured}: the request deadline of {deadline.seconds:g} s (--request-timeout-s) can't "
                      f"be met for requests that encode a reference or wait behind another; they will answer "
                      f"504. {faster}, or a longer --request-timeout-s.", met=False)
    raised = float(math.ceil(needed / 10.0) * 10)
    return Advice(f"{measured}: the default request deadline of {deadline.seconds:g} s can't be met, so it is "
                  f"{raised:g} s ({DEADLINE_MULTIPLE}x that) for this process; --request-timeout-s sets it. "
                  f"{faster}.", met=False, deadline_s=raised)


PROGRESS = StartupProgress()
