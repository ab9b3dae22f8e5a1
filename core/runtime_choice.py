"""``auto``'s encoder runtime, by measurement: timed, checked against torch fp32, chosen, cached.

On first use of a model at an image size on a machine, every candidate encoder (a runtime at a
precision) encodes the constant probe and a few fixed scenes, interleaved image by image, so each
one's median time is measured under the same load. Each one's 1-shot masks on those scenes are
compared with torch fp32's (same pipeline, its own positional basis). In fp32 the fastest *exact*
candidate is picked: probe features within 1e-4 and every mask identical. In bf16 (an allowed
approximation) the fastest bf16 candidate whose mean mask IoU reaches ``FIDELITY_FLOOR``. A faster
candidate that is not eligible is reported, never picked.

The report is cached (``core.artifacts``: atomic, verified on load) under a key of the CPU (model
name and flags), the weights, the image size, the precision, the thread count and the library
versions: a warm restart does not measure again; any change does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from core.artifacts import artifact_key, read_verified, store
from core.debias import constant_probe, debias, normalize_channels, positional_basis
from core.defaults import DEFAULT_MERGE_THRESHOLD, DEFAULT_TAU
from core.errors import WeightsError
from core.images import pixels_to_tensor
from core.pipeline import downsample_mask, segment_grid, upsample_mask

log = logging.getLogger(__name__)

Encoder = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) preprocessed -> raw (B, C, h, w) float32

CHOICE_VERSION = "1"  # bump whenever the measurement or the policy changes
CHECK_TARGETS = 3  # fixed scenes: one reference, this many targets
EXACT_TOLERANCE = 1e-4  # probe features max-abs vs torch fp32 for an exact runtime (the parity tolerance)
FIDELITY_FLOOR = 0.9  # mean mask IoU vs torch fp32 an approximate (bf16) runtime must reach
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute in bf16


# ------------------------------------------------------------------------------------- the CPU


def cpu_flags() -> frozenset[str]:
    """This CPU's instruction-set flags (Linux ``/proc/cpuinfo``; empty where unreadable)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_model() -> str:
    """This CPU's model name."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def missing_native_bf16(flags: Iterable[str]) -> str | None:
    """Why a CPU with ``flags`` has no native bf16 (it has none of ``NATIVE_BF16_FLAGS``); None when it has."""
    present = set(flags)
    if present & set(NATIVE_BF16_FLAGS):
        return None
    seen = "its flags could not be read" if not present else "it lacks both"
    return (f"this CPU has no native bf16 ({seen}: {', '.join(NATIVE_BF16_FLAGS)}): bf16 is emulated or "
            "runs as fp32, slower than or equal to --precision fp32 and not exact")


# -------------------------------------------------------------------------------- the measurement


@dataclass(frozen=True)
class Variant:
    """One candidate encoder: a runtime at a precision."""

    runtime: str
    precision: str = "fp32"

    @property
    def label(self) -> str:
        return self.runtime if self.precision == "fp32" else f"{self.runtime}-{self.precision}"


@dataclass(frozen=True)
class Measurement:
    """How one candidate encoded the check scenes (``error``: why it could not)."""

    runtime: str
    precision: str
    ms: float | None = None  # median per image, interleaved with the others
    max_abs: float | None = None  # probe features vs torch fp32
    mean_iou: float | None = None  # masks vs torch fp32
    min_iou: float | None = None
    identical: int = 0  # masks identical to torch fp32's
    scenes: int = 0
    artifact: str | None = None  # sha256 of the export / compiled model it ran
    error: str | None = None

    @property
    def exact(self) -> bool:
        return (self.error is None and self.max_abs is not None and self.max_abs <= EXACT_TOLERANCE
                and self.identical == self.scenes > 0)

    @property
    def label(self) -> str:
        return Variant(self.runtime, self.precision).label


@dataclass(frozen=True)
class ChoiceReport:
    """The measured candidates and the one picked, for the logs, ``/readyz`` and the metrics."""

    runtime: str
    precision: str
    cpu: str
    image_size: int
    measurements: tuple[Measurement, ...]
    note: str | None = None
    reused: bool = False  # read from the cache, not measured by this process

    def measured(self, variant: Variant) -> Measurement | None:
        return next((m for m in self.measurements if Variant(m.runtime, m.precision) == variant), None)

    def summary(self) -> dict[str, object]:
        """A JSON-able view: the choice and every candidate's figures."""
        return {"runtime": self.runtime, "precision": self.precision, "cpu": self.cpu, "image_size": self.image_size,
                "reused": self.reused, "note": self.note,
                "measurements": [{**asdict(m), "exact": m.exact} for m in self.measurements]}


def pick(measurements: Iterable[Measurement], precision: str) -> Measurement | None:
    """The fastest eligible candidate: exact in fp32; in bf16, bf16 with mean IoU >= ``FIDELITY_FLOOR``."""
    def eligible(m: Measurement) -> bool:
        if m.error is not None or m.ms is None:
            return False
        if precision == "fp32":
            return m.precision == "fp32" and m.exact
        return m.precision == precision and (m.mean_iou or 0.0) >= FIDELITY_FLOOR

    return min((m for m in measurements if eligible(m)), key=lambda m: m.ms or 0.0, default=None)


def explain(measurements: Iterable[Measurement], best: Measurement, precision: str,
            problem: str | None = None) -> str | None:
    """What the report should say beside the choice: faster candidates it did not pick, and why."""
    notes = [problem] if problem else []
    if best.precision == precision and pick([best], precision) is None:
        notes.append(f"no {precision} candidate reached mean mask IoU {FIDELITY_FLOOR} vs torch fp32")
    for m in measurements:
        if m.ms is not None and best.ms is not None and m.ms < best.ms and pick([m], precision) is None:
            fidelity = f"mean mask IoU {m.mean_iou:.4f}, min {m.min_iou:.4f}, probe max-abs {m.max_abs:.2g}"
            notes.append(f"{m.label} is {best.ms / m.ms:.2f}x faster but not eligible at {precision} ({fidelity})")
    return "; ".join(notes) or None


def check_scenes(image_size: int, targets: int = CHECK_TARGETS) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed scenes: (1 + targets, 3, S, S) preprocessed images (the reference first) and the
    reference's (S, S) mask: a bright disc on noise, moved and re-noised in each target."""
    rng = np.random.default_rng(2026)
    rows, cols = np.mgrid[:image_size, :image_size]
    mask = (rows - image_size // 2) ** 2 + (cols - image_size // 3) ** 2 < (image_size // 5) ** 2
    reference = rng.integers(0, 110, (image_size, image_size, 3), dtype=np.uint8)
    reference[mask] = (210, 60, 40)
    images = [reference]
    for index in range(targets):
        moved = np.roll(reference, (index + 1) * image_size // 8, axis=1).astype(int)
        images.append(np.clip(moved + rng.integers(-25, 25, moved.shape), 0, 255).astype(np.uint8))
    return torch.stack([pixels_to_tensor(image) for image in images]), torch.from_numpy(mask)


def measure(encoders: Mapping[Variant, Encoder], reference: Variant, image_size: int, components: int,
            artifacts: Mapping[Variant, str] | None = None) -> list[Measurement]:
    """Time and check every encoder on the probe and the fixed scenes against ``reference`` (torch fp32).

    The images go through the encoders interleaved (each image through each encoder in turn); the
    probe is their warm-up, the scenes their timed runs.
    """
    scenes, mask = check_scenes(image_size)
    images = [constant_probe(image_size), *(image[None] for image in scenes)]
    outputs: dict[Variant, list[torch.Tensor]] = {variant: [] for variant in encoders}
    seconds: dict[Variant, list[float]] = {variant: [] for variant in encoders}
    failed: dict[Variant, str] = {}
    with torch.inference_mode():
        for image in images:
            for variant, encode in encoders.items():
                if variant in failed:
                    continue
                start = time.perf_counter()
                try:
                    outputs[variant].append(encode(image).float().cpu())
                except WeightsError:
                    raise  # the weights themselves are unusable: no runtime can help
                except Exception as exc:  # a runtime that cannot encode is reported, never picked
                    failed[variant] = f"{type(exc).__name__}: {exc}"
                seconds[variant].append(time.perf_counter() - start)
    expected = _masks(outputs[reference], mask, image_size, components)
    measurements = []
    for variant in encoders:
        artifact = (artifacts or {}).get(variant)
        if variant in failed:
            measurements.append(Measurement(variant.runtime, variant.precision, artifact=artifact,
                                            error=failed[variant]))
            continue
        masks = _masks(outputs[variant], mask, image_size, components)
        ious = [_iou(actual, wanted) for actual, wanted in zip(masks, expected, strict=True)]
        measurements.append(Measurement(
            variant.runtime, variant.precision, ms=statistics.median(seconds[variant][1:]) * 1000.0,
            max_abs=float((outputs[variant][0] - outputs[reference][0]).abs().max()),
            mean_iou=statistics.fmean(ious), min_iou=min(ious),
            identical=sum(bool(torch.equal(a, b)) for a, b in zip(masks, expected, strict=True)),
            scenes=len(masks), artifact=artifact,
        ))
    return measurements


def _masks(outputs: list[torch.Tensor], mask: torch.Tensor, image_size: int, components: int) -> list[torch.Tensor]:
    """1-shot masks (S, S) of every target from one encoder's outputs: [probe, reference, targets...]."""
    basis = positional_basis(outputs[0][0], components)
    features = [normalize_channels(output[0]) for output in outputs[1:]]
    debiased = [debias(feature, basis) for feature in features]
    h, w = features[0].shape[-2:]
    grid_mask = downsample_mask(mask, h, w)
    masks = []
    for target, target_debiased in zip(features[1:], debiased[1:], strict=True):
        trace = segment_grid(target, target_debiased, [debiased[0]], [grid_mask], DEFAULT_TAU,
                             DEFAULT_MERGE_THRESHOLD)
        masks.append(upsample_mask(trace.mask, image_size, image_size))
    return masks


def _iou(actual: torch.Tensor, expected: torch.Tensor) -> float:
    union = int((actual | expected).sum())
    return 1.0 if union == 0 else int((actual & expected).sum()) / union


# ------------------------------------------------------------------------------------- the cache


def choice_made_from(weights_id: str, image_size: int, precision: str, threads: int,
                     versions: Mapping[str, str | None], flags: Iterable[str]) -> dict[str, object]:
    """What a measured choice depends on: the CPU, the weights, the size, the precision, threads, libraries."""
    return {"artifact": "encoder-runtime-choice", "cpu": cpu_model(),
            "flags": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16], "weights": weights_id,
            "image_size": image_size, "precision": precision, "threads": threads, "versions": dict(versions),
            "choice": CHOICE_VERSION, "tolerance": EXACT_TOLERANCE, "floor": FIDELITY_FLOOR}


def report_path(cache_dir: Path, made_from: Mapping[str, object]) -> Path:
    return cache_dir / f"choice-{artifact_key(made_from)}.report"


def load_report(cache_dir: Path | None, made_from: Mapping[str, object]) -> ChoiceReport | None:
    """The cached report of the choice ``made_from`` describes, when intact."""
    cached = read_verified(report_path(cache_dir, made_from), made_from) if cache_dir else None
    if cached is None:
        return None
    try:
        raw = json.loads(cached[0])
        measurements = tuple(Measurement(**m) for m in raw.pop("measurements"))
        return ChoiceReport(**{**raw, "reused": True}, measurements=measurements)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("re-measuring the encoder runtimes: unreadable cached report: %s", exc)
        return None


def save_report(cache_dir: Path | None, made_from: Mapping[str, object], report: ChoiceReport) -> None:
    """Cache ``report`` (a cache that cannot be written only costs a re-measurement)."""
    if cache_dir is None:
        return
    body = asdict(report)
    del body["reused"]
    data = json.dumps(body).encode()
    try:
        store(report_path(cache_dir, made_from), made_from, lambda scratch: scratch.write_bytes(data))
    except OSError as exc:
        log.warning("could not cache the encoder runtime choice in %s: %s", cache_dir, exc)


def log_report(report: ChoiceReport) -> None:
    """One line per candidate, then the choice."""
    how = "cached measurement" if report.reused else "measured interleaved"
    for m in report.measurements:
        figures = (f"error: {m.error}" if m.error else
                   f"{m.ms:.1f} ms, probe max-abs {m.max_abs:.2g}, masks {m.identical}/{m.scenes} identical, "
                   f"IoU mean {m.mean_iou:.4f} min {m.min_iou:.4f}, {'exact' if m.exact else 'approximate'}")
        log.info("encoder %s at %d (%s, %s): %s", m.label, report.image_size, report.cpu, how, figures)
    log.info("encoder runtime: %s", Variant(report.runtime, report.precision).label
             + (f" ({report.note})" if report.note else ""))
