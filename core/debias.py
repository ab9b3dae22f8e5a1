"""Positional debiasing: the subspace that a constant image's features span, and its removal.

The basis is computed once per (weights, image_size, svd_components) and cached on disk, so a
restart does not re-run the backbone on the probe. The cache is a verified file
(``core.artifacts``: a signed record of what it was made from and of its sha256) and the tensor
is checked too (shape, finite, orthonormal): a tampered, stale or broken entry is logged and
recomputed, and a basis that is not finite never serves. Unlike the official code, which builds it
while the freshly loaded DINOv3 is still in train mode (RoPE coordinate jitter makes that basis
random from build to build), the backbone here is in eval mode: the basis is deterministic.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from core.artifacts import artifact_key, read_verified, store
from core.errors import WeightsError
from core.images import IMAGENET_MEAN, IMAGENET_STD
from core.specs import PATCH_SIZE

log = logging.getLogger(__name__)

NORM_EPS = 1e-12
BASIS_FORMAT = "2"  # bump whenever what the cache holds changes
ORTHONORMAL_TOLERANCE = 1e-3  # max-abs of basis.T @ basis - I for a usable basis


def normalize_channels(features: torch.Tensor) -> torch.Tensor:
    """L2-normalise (..., C, h, w) feature maps over the channel axis (eps 1e-12)."""
    return F.normalize(features, p=2, dim=-3, eps=NORM_EPS)


def constant_probe(image_size: int) -> torch.Tensor:
    """The all-zero image after ImageNet normalisation: (1, 3, S, S)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((torch.zeros(1, 3, image_size, image_size) - mean) / std).float()


def positional_basis(probe_features: torch.Tensor, components: int) -> torch.Tensor:
    """(C, k) orthonormal basis: the top-k left singular vectors of the centred probe features.

    ``probe_features`` is the raw (C, h, w) encoder output for the constant image.
    """
    channels = probe_features.shape[0]
    flat = normalize_channels(probe_features.float()).reshape(channels, -1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    left, _, _ = torch.linalg.svd(centred, full_matrices=False)
    return left[:, :components].contiguous()


def debias(features_norm: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Project normalised (..., C, h, w) features off the positional subspace and re-normalise."""
    shape = features_norm.shape
    flat = features_norm.reshape(*shape[:-2], -1)  # (..., C, hw)
    if basis.shape[1] > 0:
        flat = flat - basis @ (basis.T @ flat)
    return normalize_channels(flat.reshape(shape))


def basis_made_from(weights_id: str, image_size: int, components: int) -> dict[str, object]:
    """What a cached basis is made from (its verified record, ``core.artifacts``)."""
    return {"artifact": "positional-basis", "weights": weights_id, "image_size": image_size,
            "svd_components": components, "backbone_mode": "eval", "torch": torch.__version__,
            "format": BASIS_FORMAT}


def basis_problem(basis: object, image_size: int, components: int) -> str | None:
    """Why ``basis`` can't be the positional basis at ``image_size`` with ``components`` (None when it can):
    a (C, k) float32 tensor, C > k, k = ``components`` or the probe's patch count if fewer, finite, orthonormal."""
    columns = min(components, (image_size // PATCH_SIZE) ** 2)
    if not isinstance(basis, torch.Tensor) or basis.dtype != torch.float32 or basis.dim() != 2:
        return "not a 2-D float32 tensor"
    if basis.shape[1] != columns or basis.shape[0] <= columns:
        return f"shape {tuple(basis.shape)}, not (channels > {columns}, {columns})"
    if not bool(torch.isfinite(basis).all()):
        return "NaN or Inf values"
    if columns and float((basis.T @ basis - torch.eye(columns)).abs().max()) > ORTHONORMAL_TOLERANCE:
        return "columns that are not orthonormal"
    return None


def load_or_build_basis(
    cache_dir: Path | None,
    weights_id: str,
    image_size: int,
    components: int,
    encode_probe: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The positional basis from the disk cache when it verifies, else computed with ``encode_probe`` and stored."""
    made_from = basis_made_from(weights_id, image_size, components)
    path = cache_dir / f"basis-{artifact_key(made_from)}.pt" if cache_dir else None
    cached = read_verified(path, made_from) if path is not None else None
    if cached is not None and path is not None:
        try:
            basis = torch.load(io.BytesIO(cached[0]), map_location="cpu", weights_only=True)
            problem = basis_problem(basis, image_size, components)
        except Exception as exc:  # a corrupt cache entry is recomputed, never fatal
            problem = f"unreadable ({exc})"
        if problem is None:
            return basis
        log.warning("recomputing the positional basis %s: %s", path, problem)
    basis = positional_basis(encode_probe(constant_probe(image_size))[0].float().cpu(), components)
    problem = basis_problem(basis, image_size, components)
    if problem is not None:
        raise WeightsError(f"the positional basis computed from the weights has {problem}: the encoder's features "
                           "of the constant image are unusable (corrupt weights, or a precision that overflows)")
    if path is not None:
        try:  # workers may share the cache volume
            store(path, made_from, lambda scratch: torch.save(basis, scratch))
        except OSError as exc:
            log.warning("could not cache the positional basis in %s: %s", path.parent, exc)
    return basis
