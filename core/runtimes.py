"""Encoder runtimes: torch (the reference), ONNX Runtime and OpenVINO on the CPU.

The non-torch runtimes run the backbone exported to ONNX with a dynamic batch. Attention must
stay fused at 4096 tokens: ONNX Runtime gets opset 23, where attention is one ``Attention`` op
(dynamo exporter); OpenVINO gets the legacy exporter's opset 18 (MatMul + Softmax), which its CPU
plugin fuses back into one attention kernel, and which exports ~10x faster. The engine compiles
OpenVINO for one image at a time: static shapes let it plan a smaller memory, and the compiled
model is cached, so a warm restart imports it without reading the weights or the ONNX file.

Everything is cached next to the positional basis (``core.artifacts``: signed records, verified
on every load, the bytes checked being the bytes loaded; rebuilt when corrupt, stale or forged):
the ONNX export made from the weights' sha256, image size, opset, torch and exporter versions;
the compiled OpenVINO model made from that, the OpenVINO version, the CPU, the precision and the
thread count. An fp32 runtime must pass a parity probe against torch on the constant image before
it is used; the verdict is cached per artifact and runtime version.

``--precision bf16`` on the CPU runs OpenVINO with a bf16 inference-precision hint, or torch
autocast: approximate (masks compared by IoU), fast only on CPUs with native bf16 (AVX512-BF16 or
AMX); a CPU without it is warned about. ONNX Runtime runs fp32 only.

``auto`` is torch on CUDA; on the CPU it is measured (``core.runtime_choice``): the fastest
candidate that is exact in fp32 (in bf16: close enough), the choice cached per CPU, weights, size,
precision and library versions.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import io
import logging
import math
import tempfile
import threading
import time
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core import metrics, runtime_choice
from core.artifacts import artifact_key, read_verified, store, writable
from core.backbone import Backbone, extract_features
from core.debias import constant_probe
from core.errors import ConfigurationError, WeightsError
from core.runtime_choice import ChoiceReport, Encoder, Measurement, Variant
from core.settings import Runtime

log = logging.getLogger(__name__)

RUNTIME_CHOICES: tuple[str, ...] = typing.get_args(Runtime)  # auto, then every runtime
RUNTIMES = RUNTIME_CHOICES[1:]
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
EXPORTER_VERSION = "1"  # bump whenever export_onnx changes what it writes
COMPILER_VERSION = "1"  # bump whenever openvino_encoder changes how it compiles
DEFAULT_OPSET = 23  # the first opset with a fused Attention op
OPSETS = {"onnxruntime": 23, "openvino": 18}  # what each runtime runs fastest (see the module docstring)
PROBE_TOLERANCE = runtime_choice.EXACT_TOLERANCE  # the backbone parity tolerance
MAX_EXPORT_BYTES = 2**31 - 2**26  # a single-file ONNX model (protobuf limit, with headroom for the graph)
PRECISIONS = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16"), "torch": ("fp32", "bf16", "fp16")}
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}


class FeatureEncoder(torch.nn.Module):
    """The backbone as one module: pixels -> last-layer normed patch tokens (B, C, h, w)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return extract_features(self.model, pixels)


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def runtime_version(name: str) -> str | None:
    """The installed version of a runtime's package, or None when it is not installed."""
    if name == "torch":
        return torch.__version__
    try:
        return importlib.metadata.version(PACKAGES[name])
    except importlib.metadata.PackageNotFoundError:
        return None


def export_onnx(model: torch.nn.Module, path: Path, height: int, width: int | None = None,
                opset: int = DEFAULT_OPSET) -> None:
    """Export the backbone as ONNX with a dynamic batch: input ``pixels``, output ``features``.

    Opset 23 uses the dynamo exporter and keeps attention as one ``Attention`` op; opset 18 uses
    the legacy exporter (attention as MatMul + Softmax), for consumers without opset 23.
    """
    example = torch.zeros(2, 3, height, width or height)  # batch 2: a batch of 1 would be specialised
    module = FeatureEncoder(model).eval()
    names = {"input_names": ["pixels"], "output_names": ["features"]}
    quiet = contextlib.redirect_stdout(io.StringIO()), _quiet("onnx_ir", "onnxscript")
    with warnings.catch_warnings(), torch.no_grad(), quiet[0], quiet[1]:
        warnings.simplefilter("ignore")
        if opset >= 23:
            torch.onnx.export(module, (example,), str(path), opset_version=opset, dynamo=True, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False, **names)
        else:
            torch.onnx.export(module, (example,), str(path), opset_version=opset, dynamo=False,
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, **names)


@contextlib.contextmanager
def _quiet(*logger_names: str) -> Iterator[None]:
    """Silence chatty loggers (the exporter's graph passes log every step at INFO)."""
    loggers = [logging.getLogger(name) for name in logger_names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# ----------------------------------------------------------------------------------- the sessions


def load_session(name: str, onnx: str | bytes, threads: int) -> Encoder:
    """An encoder running an ONNX model (a file, or its bytes; any batch) under ONNX Runtime or OpenVINO on the CPU."""
    if name == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = False  # the arena would keep the 4096-token attention peak resident
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # leave the cores to clustering
        session = onnxruntime.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        return lambda images: torch.from_numpy(session.run(None, {"pixels": _numpy(images)})[0])
    if name == "openvino":
        import openvino

        core = openvino.Core()
        compiled = core.compile_model(core.read_model(onnx), "CPU", _openvino_config(threads))
        return _openvino_infer(compiled, one_image=False)
    raise ConfigurationError(f"unknown runtime {name!r}; choose {', '.join(RUNTIME_CHOICES)}")


def _openvino_config(threads: int, precision: str = "fp32") -> dict[str, object]:
    return {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision],
            "PERFORMANCE_HINT": "LATENCY"}


def _openvino_infer(compiled: typing.Any, one_image: bool) -> Encoder:
    """An encoder calling an OpenVINO compiled model (image by image when it was compiled for one)."""
    request = compiled.create_infer_request()
    lock = threading.Lock()  # an infer request is not thread-safe; ONNX Runtime's session is

    def infer(images: torch.Tensor) -> torch.Tensor:
        pixels = _numpy(images)
        with lock:
            if not one_image:
                return torch.from_numpy(request.infer({0: pixels})[0].copy())
            return torch.cat([torch.from_numpy(request.infer({0: image[None]})[0].copy()) for image in pixels])

    return infer


def _numpy(images: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())


# ------------------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class ExportKey:
    """What an exported encoder depends on."""

    weights_id: str
    image_size: int
    opset: int = DEFAULT_OPSET

    def made_from(self) -> dict[str, object]:
        """What the export's record names (``core.artifacts``)."""
        return {"artifact": "onnx-encoder", "weights": self.weights_id, "image_size": self.image_size,
                "opset": self.opset, "torch": torch.__version__, "exporter": EXPORTER_VERSION}


def cached_export(backbone: Backbone, key: ExportKey, cache_dir: Path) -> tuple[bytes, str]:
    """The ONNX model of ``backbone`` at ``key`` and its sha256: the verified bytes of the file in
    ``cache_dir``, else exported (and stored). The backbone's weights are only read when it has to be made.
    """
    path = cache_dir / f"encoder-{artifact_key(key.made_from())}.onnx"
    cached = read_verified(path, key.made_from())
    if cached is not None:
        return cached
    if model_bytes(backbone.model) >= MAX_EXPORT_BYTES:
        raise ConfigurationError(f"model size {backbone.spec.size!r} is over the 2 GB of a single-file ONNX model; "
                                 "use --runtime torch")
    start = time.perf_counter()
    made = store(path, key.made_from(), lambda scratch: export_onnx(backbone.model, scratch, key.image_size,
                                                                    opset=key.opset))
    log.info("exported the encoder to ONNX (opset %d) in %.1f s", key.opset, time.perf_counter() - start)
    return made


def onnxruntime_encoder(backbone: Backbone, image_size: int, folder: Path, threads: int,
                        precision: str = "fp32") -> tuple[Encoder, str]:
    """ONNX Runtime on the cached opset-23 export (``precision``: fp32 only, ``candidates`` checks); with the
    export's sha256 (what the probe verdict is for)."""
    onnx, sha256 = cached_export(backbone, ExportKey(backbone.weights_id, image_size, OPSETS["onnxruntime"]), folder)
    return load_session("onnxruntime", onnx, threads), sha256


def openvino_encoder(backbone: Backbone, image_size: int, folder: Path, threads: int,
                     precision: str = "fp32") -> tuple[Encoder, str]:
    """OpenVINO compiled for one image of ``image_size`` at ``precision``; with the compiled model's sha256.

    A cached compiled model is imported as it is: no weights, no ONNX file, no compilation.
    """
    import openvino

    core, config = openvino.Core(), _openvino_config(threads, precision)
    export_key = ExportKey(backbone.weights_id, image_size, OPSETS["openvino"])
    made_from = {"artifact": "openvino-compiled", "export": export_key.made_from(),
                 "openvino": runtime_version("openvino"), "cpu": _cpu_identity(core), "threads": threads,
                 "precision": precision, "compiler": COMPILER_VERSION}
    path = folder / f"openvino-{artifact_key(made_from)}.blob"
    cached = read_verified(path, made_from)
    if cached is not None:
        try:
            return _openvino_infer(core.import_model(cached[0], "CPU", config), one_image=True), cached[1]
        except Exception as exc:  # made by another OpenVINO build or CPU after all: compile again
            log.warning("recompiling %s: %s", path, exc)
    onnx, _ = cached_export(backbone, export_key, folder)
    model = core.read_model(onnx)
    model.reshape({0: [1, 3, image_size, image_size]})
    compiled = core.compile_model(model, "CPU", config)

    def write(scratch: Path) -> None:
        stream = io.BytesIO()
        compiled.export_model(stream)
        scratch.write_bytes(stream.getbuffer())

    _, sha256 = store(path, made_from, write)
    return _openvino_infer(compiled, one_image=True), sha256


def _cpu_identity(core: typing.Any) -> str:
    """The CPU a compiled model is made for: its name and instruction-set flags."""
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return f"{core.get_property('CPU', 'FULL_DEVICE_NAME')} {hashlib.sha256(flags.encode()).hexdigest()[:12]}"


def probe_parity(name: str, session: Encoder, torch_encoder: Encoder, image_size: int,
                 artifact_sha256: str, cache_dir: Path | None) -> float:
    """Max-abs difference of ``session`` to torch on the constant probe, infinite for NaN features (a verified
    file per artifact and runtime version, ``core.artifacts``)."""
    made_from = {"artifact": "parity-verdict", "runtime": name, "version": runtime_version(name),
                 "probe": "constant", "artifact_sha256": artifact_sha256}
    record = cache_dir / f"parity-{name}-{artifact_key(made_from)}.txt" if cache_dir else None
    cached = read_verified(record, made_from) if record is not None else None
    if cached is not None:
        return float(cached[0])
    probe = constant_probe(image_size)
    max_abs = float((session(probe) - torch_encoder(probe)).abs().max())
    max_abs = max_abs if math.isfinite(max_abs) else math.inf  # NaN compares as passing: never let it
    if record is not None:
        try:
            store(record, made_from, lambda scratch: scratch.write_text(repr(max_abs)))
        except OSError as exc:
            log.warning("could not record the parity probe in %s: %s", record.parent, exc)
    return max_abs


# ------------------------------------------------------------------------------------ the choice

LOADERS: dict[str, Callable[[Backbone, int, Path, int, str], tuple[Encoder, str]]] = {
    "onnxruntime": onnxruntime_encoder, "openvino": openvino_encoder,
}
PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class ChosenEncoder:
    """The runtime an engine encodes with (``report``: how ``auto`` measured it)."""

    name: str
    version: str
    encode: Encoder
    precision: str = "fp32"
    report: ChoiceReport | None = None

    @property
    def basis_tag(self) -> str:
        """Distinguishes the positional basis this runtime's features need."""
        tag = f"{self.name}-{self.version}"
        return tag if self.precision == "fp32" else f"{tag}-{self.precision}"

    def summary(self) -> dict[str, object]:
        """The runtime and, when ``auto`` measured it, every candidate's figures (``/readyz``)."""
        if self.report is not None:
            return {**self.report.summary(), "chosen_by": "measurement"}
        return {"runtime": self.name, "precision": self.precision, "chosen_by": "setting"}


def candidates(runtime: str, device: torch.device, dtype: torch.dtype) -> list[Variant]:
    """What ``runtime`` may run at ``dtype``: ``auto`` on the CPU, every installed runtime at that precision
    (fp32 also measures OpenVINO bf16 where the CPU has native bf16, to report it); an explicit impossible
    choice is an error."""
    if runtime not in RUNTIME_CHOICES:
        raise ConfigurationError(f"unknown runtime {runtime!r}; choose {', '.join(RUNTIME_CHOICES)}")
    precision = PRECISION_NAMES[dtype]
    if runtime == "torch" or (runtime == "auto" and device.type != "cpu"):
        return [Variant("torch", precision)]
    if device.type != "cpu":
        raise ConfigurationError(f"runtime {runtime!r} runs on the CPU; use --runtime torch for device {device}")
    if runtime == "auto":
        variants = [Variant(name, precision) for name in RUNTIMES
                    if precision in PRECISIONS[name] and runtime_version(name)]
        if precision == "fp32" and runtime_version("openvino") and not missing_bf16():
            variants.append(Variant("openvino", "bf16"))  # reported, never picked in fp32
        return variants
    if precision not in PRECISIONS[runtime]:
        raise ConfigurationError(f"runtime {runtime!r} runs {' or '.join(PRECISIONS[runtime])} on the CPU; "
                                 f"use --runtime torch for precision {precision}")
    if runtime_version(runtime) is None:
        raise ConfigurationError(f"runtime {runtime!r} is not installed: pip install '{PACKAGES[runtime]}'")
    return [Variant(runtime, precision)]


def missing_bf16() -> str | None:
    """Why this CPU has no native bf16 (``runtime_choice.missing_native_bf16``); None when it has."""
    return runtime_choice.missing_native_bf16(runtime_choice.cpu_flags())


def choose_encoder(runtime: str, backbone: Backbone, torch_encoder: Encoder, device: torch.device,
                   dtype: torch.dtype, image_size: int, cache_dir: Path | None) -> ChosenEncoder:
    """The encoder of ``runtime``: an explicit one (fp32 ones pass the parity probe), or ``auto``'s measured
    choice among its candidates; exported in ``cache_dir`` (or a folder removed once loaded)."""
    variants = candidates(runtime, device, dtype)
    if device.type == "cpu" and dtype == torch.bfloat16 and (problem := missing_bf16()):
        log.warning("--precision bf16: %s", problem)
    cache_dir = cache_dir if writable(cache_dir) else None
    if runtime == "auto" and len(variants) > 1:
        chosen = _measured_choice(variants, backbone, torch_encoder, image_size, cache_dir)
    else:
        chosen = _explicit(variants[0], backbone, torch_encoder, image_size, cache_dir)
    metrics.record_encoder_runtime(chosen.summary())
    return chosen


def _open(variant: Variant, backbone: Backbone, image_size: int, cache_dir: Path | None) -> tuple[Encoder, str]:
    """An exported runtime's encoder at its precision and the sha256 of the artifact it runs."""
    with contextlib.ExitStack() as stack:  # no cache: export to a folder removed once loaded
        folder = cache_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        return LOADERS[variant.runtime](backbone, image_size, folder, torch.get_num_threads(), variant.precision)


def _explicit(variant: Variant, backbone: Backbone, torch_encoder: Encoder, image_size: int,
              cache_dir: Path | None) -> ChosenEncoder:
    """The one runtime asked for; in fp32 it must pass the parity probe, else it is a clear error."""
    if variant.runtime == "torch":
        return ChosenEncoder("torch", torch.__version__, torch_encoder, variant.precision)
    try:
        session, sha256 = _open(variant, backbone, image_size, cache_dir)
        if variant.precision == "fp32":
            max_abs = probe_parity(variant.runtime, session, torch_encoder, image_size, sha256, cache_dir)
            if max_abs > PROBE_TOLERANCE:
                raise ConfigurationError(f"differs from torch by {max_abs:.3g} > {PROBE_TOLERANCE:g}")
        return ChosenEncoder(variant.runtime, runtime_version(variant.runtime) or "", session, variant.precision)
    except WeightsError:
        raise  # the weights themselves are unusable: no runtime can help
    except Exception as exc:
        raise ConfigurationError(f"runtime {variant.runtime!r} unavailable: {exc}") from None


def _measured_choice(variants: list[Variant], backbone: Backbone, torch_encoder: Encoder, image_size: int,
                     cache_dir: Path | None) -> ChosenEncoder:
    """``auto``: the cached choice for this CPU, model, size, precision and libraries, else measured now."""
    precision = variants[0].precision
    made_from = runtime_choice.choice_made_from(backbone.weights_id, image_size, precision, torch.get_num_threads(),
                                                {name: runtime_version(name) for name in RUNTIMES},
                                                runtime_choice.cpu_flags())
    report = runtime_choice.load_report(cache_dir, made_from)
    chosen = _reuse(report, backbone, torch_encoder, image_size, cache_dir) if report else None
    if chosen is None:
        chosen = _measure(variants, backbone, torch_encoder, image_size, cache_dir)
    assert chosen.report is not None
    if not chosen.report.reused:
        runtime_choice.save_report(cache_dir, made_from, chosen.report)
    runtime_choice.log_report(chosen.report)
    return chosen


def _reuse(report: ChoiceReport, backbone: Backbone, torch_encoder: Encoder, image_size: int,
           cache_dir: Path | None) -> ChosenEncoder | None:
    """The cached choice, loaded; None (measure again) when its artifact is no longer the one measured."""
    variant = Variant(report.runtime, report.precision)
    if variant.runtime == "torch":
        return ChosenEncoder("torch", torch.__version__, torch_encoder, variant.precision, report)
    measured = report.measured(variant)
    try:
        session, sha256 = _open(variant, backbone, image_size, cache_dir)
    except WeightsError:
        raise
    except Exception as exc:
        log.warning("measuring the encoder runtimes again: %s failed to load: %s", variant.label, exc)
        return None
    if measured is None or measured.artifact != sha256:
        log.warning("measuring the encoder runtimes again: %s was rebuilt since it was measured", variant.label)
        return None
    return ChosenEncoder(variant.runtime, runtime_version(variant.runtime) or "", session, variant.precision, report)


def _measure(variants: list[Variant], backbone: Backbone, torch_encoder: Encoder, image_size: int,
             cache_dir: Path | None) -> ChosenEncoder:
    """Load every candidate, measure them interleaved against torch fp32, and pick."""
    encoders: dict[Variant, Encoder] = {}
    artifacts: dict[Variant, str] = {}
    failures: list[Measurement] = []
    reference = Variant("torch", "fp32")
    for variant in variants:
        try:
            if variant.runtime == "torch":
                encoders[variant] = torch_encoder
            else:
                encoders[variant], artifacts[variant] = _open(variant, backbone, image_size, cache_dir)
        except WeightsError:
            raise  # the weights themselves are unusable: no runtime can help
        except Exception as exc:  # reported, never picked
            log.warning("runtime %s skipped: %s", variant.label, exc)
            failures.append(Measurement(variant.runtime, variant.precision, error=str(exc)))
    if reference not in encoders:  # bf16: the reference is measured too (reported, not eligible)
        encoders[reference] = functools.partial(_torch_fp32, backbone)
    measurements = runtime_choice.measure(encoders, reference, image_size, backbone.spec.svd_components, artifacts)
    measurements += failures
    precision = variants[0].precision
    best = runtime_choice.pick(measurements, precision)
    if best is None:  # bf16 where nothing is close enough: torch at the precision asked for, as before
        best = next(m for m in measurements if (m.runtime, m.precision) == ("torch", precision))
    note = runtime_choice.explain(measurements, best, precision, missing_bf16() if precision == "bf16" else None)
    report = ChoiceReport(best.runtime, best.precision, runtime_choice.cpu_model(), image_size, tuple(measurements),
                          note)
    variant = Variant(best.runtime, best.precision)
    return ChosenEncoder(best.runtime, runtime_version(best.runtime) or "", encoders[variant], best.precision, report)


def _torch_fp32(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    """Torch fp32 on the CPU: the reference every candidate is compared with."""
    with torch.inference_mode():
        return extract_features(backbone.model, images)
