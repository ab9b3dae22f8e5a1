"""Values that flow through the engine: encoded images, reference features, results."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from core.debias import debias
from core.errors import IncompatibleReferenceError, InvalidInputError

_FEATURE_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class ModelInput:
    """An image squashed to the network's input square; the decoded original is not kept."""

    pixels: np.ndarray  # (S, S, 3) uint8
    original_size: tuple[int, int]  # (H, W) of the decoded image


@dataclass(frozen=True)
class EncodedImage:
    """One image through the backbone: normalised raw and debiased (C, h, w) feature maps."""

    features: torch.Tensor
    debiased: torch.Tensor
    original_size: tuple[int, int]  # (H, W) of the decoded image
    pixels: np.ndarray | None = None  # (S, S, 3) uint8 network input, kept only for CRF refinement

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.features.shape[-2]), int(self.features.shape[-1])


@dataclass(frozen=True)
class ReferenceFeatures:
    """A reusable reference: its features, its mask at grid resolution, and what made them."""

    key: str  # content hash of (image bytes, mask bytes, model id, image size)
    model_id: str
    image_size: int
    original_size: tuple[int, int]  # (H, W)
    features: torch.Tensor  # (C, h, w) normalised, not debiased (matching with raw features)
    debiased: torch.Tensor  # (C, h, w) normalised, debiased
    mask: torch.Tensor | None  # (h, w) bool, None for a matching-only reference
    mask_area: int = 0  # foreground pixels of the mask at its own resolution

    @property
    def nbytes(self) -> int:
        tensors = [self.features, self.debiased] + ([self.mask] if self.mask is not None else [])
        return sum(t.element_size() * t.nelement() for t in tensors)

    def require_mask(self) -> torch.Tensor:
        """The grid mask, or a clear error for a matching-only reference."""
        if self.mask is None:
            raise InvalidInputError(f"reference {self.key} has no mask: it can only be used for matching")
        return self.mask

    def to_bytes(self, dtype: str = "fp16", with_debiased: bool = True) -> bytes:
        """Serialise (features in ``dtype``: fp16 halves the size, fp32 is lossless).
        ``with_debiased=False`` leaves the debiased map out (half the size again): ``from_bytes``
        then recomputes it from the raw features and the engine's positional basis."""
        meta = {
            "key": self.key, "model_id": self.model_id, "image_size": self.image_size,
            "original_size": list(self.original_size), "mask_area": self.mask_area,
        }
        arrays = {
            "features": self.features.to(_FEATURE_DTYPES[dtype]).cpu().numpy(),
        }
        if with_debiased:
            arrays["debiased"] = self.debiased.to(_FEATURE_DTYPES[dtype]).cpu().numpy()
        if self.mask is not None:
            arrays["mask"] = self.mask.cpu().numpy()
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes, basis: torch.Tensor | None = None) -> ReferenceFeatures:
        """Inverse of ``to_bytes``; features come back as float32. A payload without the debiased
        map needs the engine's positional ``basis`` (the map is recomputed on its device)."""
        with np.load(io.BytesIO(payload), allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            mask = torch.from_numpy(data["mask"].copy()) if "mask" in data.files else None
            features = torch.from_numpy(data["features"].astype(np.float32))
            if "debiased" in data.files:
                debiased = torch.from_numpy(data["debiased"].astype(np.float32))
            elif basis is None:
                raise ValueError("these reference features were stored without their debiased map: "
                                 "give the engine's positional basis")
            elif basis.shape[0] != features.shape[0]:
                raise IncompatibleReferenceError(
                    f"reference {meta['key']} has {features.shape[0]} channels ({meta['model_id']}); "
                    f"this engine's basis has {basis.shape[0]}")
            else:
                features = features.to(basis.device)
                debiased = debias(features, basis)
            return cls(
                key=meta["key"], model_id=meta["model_id"], image_size=int(meta["image_size"]),
                original_size=tuple(meta["original_size"]), mask_area=int(meta["mask_area"]),
                features=features, debiased=debiased, mask=mask,
            )


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of a mask's foreground, None when empty: the one bbox of a prediction
    (the API's JSON bodies, instances and PNG headers use it too)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


@dataclass
class SegmentationResult:
    """The predicted mask of one target with its summary numbers."""

    mask: np.ndarray  # (H, W) bool
    score: float  # mean cosine similarity of the predicted patches to the prototype (0 when empty)
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """(x, y, width, height) of the mask, None when empty."""
        return mask_bbox(self.mask)


@dataclass
class MatchResult:
    """Target points matched to reference keypoints."""

    points: np.ndarray  # (N, 2) float (x, y) in target pixels
    confidence: np.ndarray  # (N,) cosine similarity at the best-matching target patch
    timings: dict[str, float] = field(default_factory=dict)
