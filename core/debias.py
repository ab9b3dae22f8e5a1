"""Positional debiasing: the subspace that a constant image's features span, and its removal.

The basis is computed once per (weights, image_size, svd_components) and cached on disk, so a
restart does not re-run the backbone on the probe. Unlike the official code, which builds it
while the freshly loaded DINOv3 is still in train mode (RoPE coordinate jitter makes that basis
random from build to build), the backbone here is in eval mode: the basis is deterministic.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from core.artifacts import make_atomic
from core.images import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

NORM_EPS = 1e-12


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


def basis_cache_key(weights_id: str, image_size: int, components: int) -> str:
    """Content key of a cached basis."""
    raw = f"{weights_id}|{image_size}|{components}|eval".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def load_or_build_basis(
    cache_dir: Path | None,
    weights_id: str,
    image_size: int,
    components: int,
    encode_probe: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The positional basis from the disk cache, or computed with ``encode_probe`` and stored."""
    path = cache_dir / f"basis-{basis_cache_key(weights_id, image_size, components)}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(cached, torch.Tensor) and cached.shape[1] == components:
                return cached
        except Exception as exc:  # a corrupt cache entry is recomputed, never fatal
            log.warning("ignoring unreadable positional-basis cache %s: %s", path, exc)
    basis = positional_basis(encode_probe(constant_probe(image_size))[0].float().cpu(), components)
    if path is not None:
        try:
            make_atomic(path, lambda scratch: torch.save(basis, scratch))  # workers may share the cache volume
        except OSError as exc:
            log.warning("could not cache the positional basis in %s: %s", path.parent, exc)
    return basis
