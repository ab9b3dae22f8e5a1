"""``Insid3``: the engine that turns images into masks and matches, with no global state.

```
engine = Insid3.build(model_size="large", image_size=1024, device="cuda")
ref = engine.encode_reference(image, mask)            # reusable, cached by content hash
result = engine.segment(target, [ref, ...])            # mask + area, bbox, score
results = engine.segment_batch(targets, [ref, ...])    # one encoder pass for the batch
points = engine.match(target, ref_or_image, keypoints)
```
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from core import clustering, metrics, runtimes, startup
from core.backbone import Backbone, extract_features, load_backbone
from core.cache import ReferenceCache, content_bytes, reference_key
from core.debias import debias, load_or_build_basis, normalize_channels
from core.errors import ConfigurationError, IncompatibleReferenceError, InvalidInputError
from core.images import ImageInput, check_mask, load_image, load_mask, mask_to_tensor, pixels_to_tensor, resize_square
from core.pipeline import downsample_mask, match_keypoints, segment_grid, upsample_mask
from core.requests import DEFAULT_TENANT, MatchRequest, ReferenceRequest, Request, SegmentRequest, reference_ids
from core.serving import ReferenceNotFound
from core.settings import EngineOptions
from core.specs import get_spec, resolve_svd_components
from core.types import EncodedImage, MatchResult, ModelInput, ReferenceFeatures, SegmentationResult

T = TypeVar("T")
R = TypeVar("R")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} requested but CUDA is not available")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 autocast on CUDA and fp32 (the reference) on the CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise ConfigurationError(f"unknown precision {precision!r}; choose auto, {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


@dataclass(frozen=True)
class PreparedReference:
    """A decoded reference image, squashed, with its validated mask at image_size (None: matching only)."""

    input: ModelInput
    mask: torch.Tensor | None
    mask_area: int


@dataclass(frozen=True)
class _PreparedReference:
    """A reference request decoded and validated, with its content hash."""

    key: str
    reference: PreparedReference

    @property
    def input(self) -> ModelInput:
        return self.reference.input


@dataclass(frozen=True)
class _PreparedTarget:
    """A target decoded and squashed, with the checked references its request names."""

    input: ModelInput
    references: list[ReferenceFeatures]


_Prepared = _PreparedReference | _PreparedTarget
Outcome = ReferenceFeatures | SegmentationResult | MatchResult | Exception


class Insid3:
    """INSID3 on a frozen DINOv3 backbone."""

    def __init__(self, backbone: Backbone, basis: torch.Tensor, options: EngineOptions,
                 device: torch.device, dtype: torch.dtype, cache: ReferenceCache) -> None:
        self.backbone = backbone
        self.options = options
        self.device = device
        self.dtype = dtype
        self.basis = basis.to(device)
        self.cache = cache
        self.runtime = runtimes.ChosenEncoder("torch", torch.__version__, self.torch_features)
        metrics.track_cache(cache)

    @classmethod
    def build(cls, options: EngineOptions | None = None, /, **fields: Any) -> Insid3:
        """Load the backbone, its encoder runtime and positional basis from ``options`` (a
        ``core.settings.EngineOptions``, or settings extending it; default: every default) with
        ``fields`` named like its fields on top: ``Insid3.build(model_size="small", runtime="torch")``.
        Every invalid setting is a clear ``ConfigurationError``."""
        chosen = EngineOptions.of(options, **fields)
        spec = get_spec(chosen.model_size)
        components = resolve_svd_components(spec, chosen.svd_components)
        if chosen.crf:
            from core.crf import require_crf

            require_crf()
        device = resolve_device(chosen.device)
        dtype = resolve_precision(chosen.precision, device)
        cache_dir = Path(chosen.basis_cache_dir) if chosen.basis_cache_dir else None
        with startup.PROGRESS.phase("weights", f"{chosen.model_size}: find and hash the file"):
            backbone = load_backbone(spec, chosen.weights, chosen.weights_tag, Path(chosen.pretrain_dir),
                                     cache_dir / "hashes" if cache_dir else None, device)
        resolved = chosen.model_copy(update={  # what "unset" means for this backbone and device
            "svd_components": components,
            "encoder_batch_size": chosen.encoder_batch_size or (8 if device.type == "cuda" else 1),
        })
        engine = cls(backbone, torch.zeros(spec.embed_dim, 0), resolved, device, dtype,
                     ReferenceCache(chosen.cache_bytes))
        if device.type == "cpu":
            with startup.PROGRESS.phase("clustering kernel", "compile, or load from numba's cache"):
                clustering.warm_up()  # after the weights: a missing file is reported at once
        engine._prepare_encoder(chosen.runtime, cache_dir)
        startup.PROGRESS.engine_built(engine)
        return engine

    def _prepare_encoder(self, runtime: str, cache_dir: Path | None) -> None:
        """Choose the encoder runtime, build or drop the torch model for it, and load its positional basis."""
        backbone = self.backbone
        with startup.PROGRESS.phase("encoder runtime", f"{runtime}: export, compile and parity probe, or the cache"):
            self.runtime = runtimes.choose_encoder(runtime, backbone, self.torch_features, self.device, self.dtype,
                                                   self.image_size, cache_dir / "encoders" if cache_dir else None)
        if self.runtime.name == "torch":
            with startup.PROGRESS.phase("torch model", "read the weights into the model"):
                backbone.load()  # now: unusable weights are an error at start, not at the first request
        else:
            backbone.release()  # the exported encoder holds its own copy of the weights
        basis_tag = str(self.dtype).removeprefix("torch.") if self.runtime.name == "torch" else self.runtime.basis_tag
        with startup.PROGRESS.phase("positional basis", f"{self.runtime.name}: the cache, or one encoder pass"):
            self.basis = load_or_build_basis(  # through the runtime whose features it debiases
                cache_dir, f"{backbone.model_id}-{basis_tag}", self.image_size, self.options.svd_components,
                self.encode_tensor,
            ).to(self.device)

    # ------------------------------------------------------------------------------- identity

    @property
    def model_id(self) -> str:
        """Identifies the weights: references from another model are refused."""
        return self.backbone.model_id

    @property
    def image_size(self) -> int:
        return self.options.image_size

    # ------------------------------------------------------------------------------- encoding

    @torch.inference_mode()
    def torch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Raw backbone features through torch (autocast below fp32), the reference runtime."""
        images = images.to(self.device, non_blocking=True)
        if self.dtype == torch.float32:
            return extract_features(self.backbone.model, images)
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            return extract_features(self.backbone.model, images)

    @torch.inference_mode()
    def encode_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of preprocessed (B, 3, S, S) images, L2-normalised, float32, on device."""
        start = time.perf_counter()
        features = self.runtime.encode(images).to(self.device)
        features = normalize_channels(features.float())
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        metrics.ENCODER_SECONDS.observe(time.perf_counter() - start)
        metrics.BATCH_SIZE.observe(features.shape[0])
        metrics.update_gpu_memory(self.device)
        return features

    def encode_images(self, images: Sequence[ImageInput]) -> list[EncodedImage]:
        """Decode and encode images, ``encoder_batch_size`` per backbone call."""
        decoded = [load_image(image, self.options.max_pixels) for image in images]
        return self.encode_decoded(decoded)

    def encode_decoded(self, images: Sequence[Image.Image]) -> list[EncodedImage]:
        """Encode already-decoded RGB images."""
        return self.encode_inputs([self.model_input(image) for image in images])

    def model_input(self, image: Image.Image) -> ModelInput:
        """``image`` squashed to the network's input square (the original can then be freed)."""
        return ModelInput(resize_square(image, self.image_size), (image.height, image.width))

    def encode_inputs(self, inputs: Sequence[ModelInput]) -> list[EncodedImage]:
        """Encode squashed images, ``encoder_batch_size`` per backbone call."""
        encoded: list[EncodedImage] = []
        step = self.options.encoder_batch_size
        for first in range(0, len(inputs), step):
            chunk = inputs[first:first + step]
            pixels = [item.pixels for item in chunk]
            features = self.encode_tensor(torch.stack([pixels_to_tensor(p) for p in pixels]))
            debiased = debias(features, self.basis)
            encoded += [
                EncodedImage(features[i], debiased[i], item.original_size, item.pixels if self.options.crf else None)
                for i, item in enumerate(chunk)
            ]
        return encoded

    def reference_key(self, image: ImageInput, mask: ImageInput | None, owner: str = DEFAULT_TENANT) -> str:
        """The content hash that identifies the reference (image, mask) of ``owner`` under this model."""
        return reference_key(content_bytes(image), content_bytes(mask) if mask is not None else None,
                             self.model_id, self.image_size, owner)

    def encode_reference(self, image: ImageInput, mask: ImageInput | None = None) -> ReferenceFeatures:
        """Reference features of ``image`` under ``mask`` (None: matching only), from the cache if seen."""
        return self.encode_references([(image, mask)])[0]

    def encode_references(self, pairs: Sequence[tuple[ImageInput, ImageInput | None]]) -> list[ReferenceFeatures]:
        """Reference features of several (image, mask) pairs, through ``run_batch`` (uncached ones
        share encoder passes); the first failure is raised."""
        keys = [self.reference_key(image, mask) for image, mask in pairs]
        unique = dict(zip(keys, pairs, strict=True))  # identical pairs are encoded once
        requests = [ReferenceRequest(image, mask, key=key) for key, (image, mask) in unique.items()]
        found = dict(zip(unique, self._results(requests, {}, ReferenceFeatures), strict=True))
        return [found[key] for key in keys]

    def prepare_reference(self, image: ImageInput, mask: ImageInput | None) -> PreparedReference:
        """Decode and validate a reference (empty or mis-shaped masks are rejected) before encoding."""
        decoded = load_image(image, self.options.max_pixels)
        if mask is None:
            return PreparedReference(self.model_input(decoded), None, 0)
        mask_array = load_mask(mask, self.options.max_pixels)
        check_mask(mask_array, (decoded.height, decoded.width))
        return PreparedReference(self.model_input(decoded), mask_to_tensor(mask_array, self.image_size),
                                 int(mask_array.sum()))

    def finish_reference(self, key: str, prepared: PreparedReference, encoded: EncodedImage) -> ReferenceFeatures:
        """The reference features of a prepared, encoded reference, stored in the cache."""
        h, w = encoded.grid
        grid_mask = None if prepared.mask is None else downsample_mask(prepared.mask.to(self.device), h, w)
        reference = ReferenceFeatures(
            key=key, model_id=self.model_id, image_size=self.image_size,
            original_size=encoded.original_size, features=encoded.features, debiased=encoded.debiased,
            mask=grid_mask, mask_area=prepared.mask_area,
        )
        self.cache.put(reference)
        return reference

    def load_reference(self, payload: bytes) -> ReferenceFeatures:
        """Serialised reference features (``ReferenceFeatures.to_bytes``, with or without the
        debiased map) on this engine's device; an error if another model or size made them."""
        return self.check_reference(ReferenceFeatures.from_bytes(payload, self.basis))

    def check_reference(self, reference: ReferenceFeatures) -> ReferenceFeatures:
        """``reference`` on this engine's device, or an error if another model or size made it."""
        if reference.model_id != self.model_id or reference.image_size != self.image_size:
            raise IncompatibleReferenceError(
                f"reference {reference.key} was encoded by {reference.model_id} at image size "
                f"{reference.image_size}; this engine is {self.model_id} at {self.image_size}"
            )
        if reference.features.device == self.device:
            return reference
        return ReferenceFeatures(
            key=reference.key, model_id=reference.model_id, image_size=reference.image_size,
            original_size=reference.original_size, features=reference.features.to(self.device),
            debiased=reference.debiased.to(self.device),
            mask=None if reference.mask is None else reference.mask.to(self.device),
            mask_area=reference.mask_area,
        )

    # --------------------------------------------------------------------------- segmentation

    def segment(self, target: ImageInput, references: Sequence[ReferenceFeatures],
                tau: float | None = None, merge_threshold: float | None = None) -> SegmentationResult:
        """Segment in ``target`` what the references' masks show (k-shot with k references)."""
        return self.segment_batch([target], references, tau, merge_threshold)[0]

    def segment_batch(self, targets: Sequence[ImageInput], references: Sequence[ReferenceFeatures],
                      tau: float | None = None, merge_threshold: float | None = None) -> list[SegmentationResult]:
        """Segment several targets with the same references, through ``run_batch`` (the targets
        share encoder passes); the first failure is raised."""
        ids = [reference.key for reference in self._require_references(references)]
        requests = [SegmentRequest(target, ids, tau, merge_threshold) for target in targets]
        return self._results(requests, {reference.key: reference for reference in references}, SegmentationResult)

    def segment_encoded(self, target: EncodedImage, references: Sequence[ReferenceFeatures],
                        tau: float | None = None, merge_threshold: float | None = None) -> SegmentationResult:
        """The pipeline on an already-encoded target."""
        references = [self.check_reference(r) for r in self._require_references(references)]
        return self._segment(target, references, tau, merge_threshold)

    def _segment(self, target: EncodedImage, references: Sequence[ReferenceFeatures],
                 tau: float | None, merge_threshold: float | None) -> SegmentationResult:
        """The pipeline with references already checked and on this device."""
        start = time.perf_counter()
        trace = segment_grid(
            target.features, target.debiased, [r.debiased for r in references],
            [r.require_mask() for r in references],
            self.options.tau if tau is None else tau,
            self.options.merge_threshold if merge_threshold is None else merge_threshold,
        )
        if trace.aggregation is not None:
            metrics.CLUSTERING_SECONDS.observe(trace.clustering_ms / 1000.0)
        mask = upsample_mask(trace.mask, self.image_size, self.image_size)
        if self.options.crf:
            from core.crf import refine_mask

            mask = refine_mask(target.pixels, mask)
        if self.options.resize_to_original and target.original_size != (self.image_size, self.image_size):
            mask = upsample_mask(mask, *target.original_size)
        kept = trace.mask
        score = float(trace.similarity[kept].mean()) if kept.any() else 0.0
        timings = {
            "pipeline_ms": (time.perf_counter() - start) * 1000.0,
            "clustering_ms": trace.clustering_ms,
        }
        return SegmentationResult(mask.cpu().numpy(), score, timings)

    @staticmethod
    def _require_references(references: Sequence[R]) -> Sequence[R]:
        if not references:
            raise InvalidInputError("at least one reference is needed")
        return references

    # ------------------------------------------------------------------------------- matching

    def match(self, target: ImageInput, reference: ReferenceFeatures | ImageInput,
              keypoints: Sequence[Sequence[float]] | np.ndarray, debiased: bool = True) -> MatchResult:
        """Target points matching ``keypoints`` ((x, y) in reference pixels)."""
        if not isinstance(reference, ReferenceFeatures):
            reference = self.encode_reference(reference)
        request = MatchRequest(target, reference.key, keypoints, debiased)
        return self._results([request], {reference.key: reference}, MatchResult)[0]

    def match_encoded(self, target: EncodedImage, reference: ReferenceFeatures,
                      keypoints: Sequence[Sequence[float]] | np.ndarray, debiased: bool = True) -> MatchResult:
        """Matching on an already-encoded target."""
        return self._match(target, self.check_reference(reference), keypoints, debiased)

    def _match(self, target: EncodedImage, reference: ReferenceFeatures,
               keypoints: Sequence[Sequence[float]] | np.ndarray, debiased: bool) -> MatchResult:
        """Matching with the reference already checked and on this device."""
        points = np.asarray(keypoints, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0 or not np.isfinite(points).all():
            raise InvalidInputError("keypoints must be a non-empty list of finite [x, y] pairs")
        start = time.perf_counter()
        ref_map, target_map = ((reference.debiased, target.debiased) if debiased
                               else (reference.features, target.features))
        matched, _, confidence = match_keypoints(
            ref_map, target_map, torch.from_numpy(points).to(self.device),
            reference.original_size, target.original_size,
        )
        timings = {"pipeline_ms": (time.perf_counter() - start) * 1000.0}
        return MatchResult(matched.cpu().numpy(), confidence.clamp(-1, 1).cpu().numpy(), timings)

    # ------------------------------------------------------------------------------- batches

    def run_batch(self, requests: Sequence[Request],
                  references: Mapping[str, ReferenceFeatures]) -> list[Outcome]:
        """Run ``requests`` with one encoder pass over all their images; one outcome per request,
        in order. ``references`` holds the stored references they name (each checked once here).
        Any failure (a bad input, an engine bug) is that request's outcome alone."""
        checked: dict[str, ReferenceFeatures | Exception] = {}
        outcomes: dict[int, Outcome] = {}
        pending: list[tuple[int, _Prepared]] = []
        for index, request in enumerate(requests):
            try:
                prepared = self._prepare(request, references, checked)
            except Exception as error:
                outcomes[index] = error
                continue
            if isinstance(prepared, ReferenceFeatures):
                outcomes[index] = prepared  # an identical reference is cached
            else:
                pending.append((index, prepared))
        start = time.perf_counter()
        encoded = self._encode_each([prepared.input for _, prepared in pending])
        encode_ms = (time.perf_counter() - start) * 1000.0 / max(len(pending), 1)  # each image's share
        for (index, prepared), features in zip(pending, encoded, strict=True):
            try:
                if isinstance(features, Exception):
                    raise features
                outcomes[index] = self._finish(requests[index], prepared, features, encode_ms)
            except Exception as error:
                outcomes[index] = error
        return [outcomes[index] for index in range(len(requests))]

    def _results(self, requests: Sequence[Request], references: Mapping[str, ReferenceFeatures],
                 expected: type[T]) -> list[T]:
        """``run_batch`` for a library caller: the outcomes, or the first failure raised."""
        outcomes = self.run_batch(requests, references)
        failure = next((outcome for outcome in outcomes if isinstance(outcome, Exception)), None)
        if failure is not None:
            raise failure
        return [outcome for outcome in outcomes if isinstance(outcome, expected)]

    def _prepare(self, request: Request, references: Mapping[str, ReferenceFeatures],
                 checked: dict[str, ReferenceFeatures | Exception]) -> _Prepared | ReferenceFeatures:
        """Decode and validate a request's input before the shared encoder pass."""
        if isinstance(request, ReferenceRequest):
            key = request.key or self.reference_key(request.image, request.mask, request.owner)
            cached = self.cache.get(key)
            if cached is not None:
                return cached
            return _PreparedReference(key, self.prepare_reference(request.image, request.mask))
        if isinstance(request, SegmentRequest):
            self._require_references(request.reference_ids)
        for reference_id in reference_ids(request):
            if reference_id not in checked:
                try:
                    if reference_id not in references:
                        raise ReferenceNotFound(reference_id)
                    checked[reference_id] = self.check_reference(references[reference_id])
                except Exception as error:
                    checked[reference_id] = error
            if isinstance(checked[reference_id], Exception):
                raise checked[reference_id]
        return _PreparedTarget(self.model_input(load_image(request.target, self.options.max_pixels)),
                               [checked[r] for r in reference_ids(request)])

    def _encode_each(self, inputs: Sequence[ModelInput]) -> list[EncodedImage | Exception]:
        """``encode_inputs`` over all inputs; when that fails, each input alone so a failure is its own."""
        try:
            return list(self.encode_inputs(inputs))
        except Exception:
            if len(inputs) <= 1:
                raise
        outcomes: list[EncodedImage | Exception] = []
        for item in inputs:
            try:
                outcomes += self.encode_inputs([item])
            except Exception as error:
                outcomes.append(error)
        return outcomes

    def _finish(self, request: Request, prepared: _Prepared, encoded: EncodedImage, encode_ms: float) -> Outcome:
        """The per-request pipeline after the encoder pass."""
        if isinstance(prepared, _PreparedReference):
            return self.finish_reference(prepared.key, prepared.reference, encoded)
        if isinstance(request, SegmentRequest):
            result: SegmentationResult | MatchResult = self._segment(
                encoded, prepared.references, request.tau, request.merge_threshold)
        else:
            assert isinstance(request, MatchRequest)
            result = self._match(encoded, prepared.references[0], request.points, request.debiased)
        result.timings["encode_ms"] = encode_ms
        return result
