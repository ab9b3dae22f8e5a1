"""The INSID3 algorithm, stage by stage, on feature maps.

Everything here works on tensors that the backbone already produced (normalised (C, h, w) maps,
raw and debiased), so the same code serves fresh images, cached references, batches and the
parity fixtures. The stages follow the official ``models/insid3.py`` exactly (see
shared/parity/README.md, section 2.6, for the conventions reproduced here):

1. ``downsample_mask``      image-resolution mask -> grid (bilinear > 0.5, nearest, centroid)
2. ``reference_prototype``  mean debiased feature under each mask, averaged over shots
3. ``forward_candidates``   positive similarity to the prototype (top-10 % fallback)
4. ``backward_votes``       target patches whose nearest reference patch is in the mask
5. ``cluster_patches``      average-linkage clustering of the target's raw features
6. ``aggregate_clusters``   seed = best candidate cluster; keep clusters scoring > threshold
7. ``upsample_mask``        grid -> image size (bilinear > 0.5)
8. ``match_keypoints``      kernel soft-argmax correspondence
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.clustering import cluster_patches

SOFTMAX_TEMPERATURE = 0.04
KERNEL_SIGMA = 7.0
FORWARD_FALLBACK_QUANTILE = 0.9
UPSAMPLE_BAND_PIXELS = 1 << 20  # float32 values per band of a large mask upsampling (4 MB)


def downsample_mask(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(S, S) bool mask -> (h, w) bool grid, with the official fallbacks for tiny masks."""
    as_float = mask.float()[None, None]
    down = F.interpolate(as_float, size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0.5
    if not down.any():
        down = F.interpolate(as_float, size=(h, w), mode="nearest")[0, 0] > 0.5
    if not down.any():
        centre = torch.argwhere(mask).float().mean(dim=0)
        row, col = (centre / (mask.shape[-1] // w)).int().tolist()
        down[row, col] = True
    return down


def reference_prototype(refs_debiased: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """(C,) normalised mean over shots of each shot's mean debiased feature under its grid mask."""
    per_shot = [feats[:, mask].mean(dim=1) for feats, mask in zip(refs_debiased, masks, strict=True)]
    return F.normalize(torch.stack(per_shot).mean(dim=0), p=2, dim=0)


def forward_candidates(target_debiased: torch.Tensor, prototype: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarity map, forward mask): patches positively similar to the prototype.

    When no patch is positive, the top 10 % (strictly above the 0.9 quantile) are taken.
    """
    similarity = torch.einsum("chw,c->hw", target_debiased, prototype)
    forward = similarity > 0
    if not forward.any():
        forward = similarity > float(torch.quantile(similarity, FORWARD_FALLBACK_QUANTILE))
    return similarity, forward


def backward_votes(target_debiased: torch.Tensor, refs_debiased: Sequence[torch.Tensor],
                   masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """(h, w) int32: per target patch, the shots whose nearest reference patch lies in the mask."""
    channels, h, w = target_debiased.shape
    target_flat = target_debiased.reshape(channels, -1)
    votes = torch.zeros(h * w, dtype=torch.int32, device=target_debiased.device)
    for feats, mask in zip(refs_debiased, masks, strict=True):
        similarity = target_flat.T @ feats.reshape(channels, -1)  # (target patches, ref patches)
        nearest = similarity.argmax(dim=1)
        votes += mask.reshape(-1)[nearest].to(torch.int32)
    return votes.reshape(h, w)


def candidate_mask(forward: torch.Tensor, votes: torch.Tensor, shots: int) -> torch.Tensor:
    """Forward AND a majority of the shots' backward votes."""
    return forward & (votes >= math.ceil(shots / 2))


@dataclass
class Aggregation:
    """Per-cluster scores of the aggregation step (indexed by cluster label)."""

    labels: torch.Tensor  # (h, w) int64
    seed: int
    cross: torch.Tensor
    intra: torch.Tensor
    area: torch.Tensor
    combined: torch.Tensor
    mask: torch.Tensor  # (h, w) bool


def _cluster_means(features_flat: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(K, C) normalised mean feature of each cluster; ``features_flat`` is (C, N)."""
    sums = torch.zeros(k, features_flat.shape[0], dtype=features_flat.dtype, device=features_flat.device)
    sums.index_add_(0, labels, features_flat.T)
    counts = torch.bincount(labels, minlength=k).to(features_flat.dtype)
    return F.normalize(sums / counts[:, None], p=2, dim=1)


def aggregate_clusters(labels: torch.Tensor, candidates: torch.Tensor, similarity: torch.Tensor,
                       prototype: torch.Tensor, target_features: torch.Tensor,
                       target_debiased: torch.Tensor, merge_threshold: float) -> Aggregation:
    """Seed selection and cluster aggregation.

    seed = the candidate cluster whose debiased mean is most similar to the prototype; a cluster
    is kept when cross-similarity x intra-similarity to the seed x candidate fraction exceeds
    ``merge_threshold`` (the seed's fraction counts as 1).
    """
    channels = target_features.shape[0]
    flat_labels = labels.reshape(-1)
    k = int(flat_labels.max()) + 1
    sizes = torch.bincount(flat_labels, minlength=k)
    candidate_counts = torch.bincount(flat_labels[candidates.reshape(-1)], minlength=k)
    matched = torch.nonzero(candidate_counts > 0).flatten()

    debiased_means = _cluster_means(target_debiased.reshape(channels, -1), flat_labels, k)
    seed = int(matched[torch.argmax(debiased_means[matched] @ prototype)])

    raw_means = _cluster_means(target_features.reshape(channels, -1), flat_labels, k)
    intra = raw_means @ raw_means[seed]
    cross = torch.zeros(k, dtype=similarity.dtype, device=similarity.device)
    cross.index_add_(0, flat_labels, similarity.reshape(-1))
    cross = cross / sizes.to(similarity.dtype)
    area = candidate_counts.to(similarity.dtype) / sizes.to(similarity.dtype)
    area[seed] = 1.0
    combined = cross * intra * area
    mask = (combined > merge_threshold)[labels]
    return Aggregation(labels, seed, cross, intra, area, combined, mask)


def upsample_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bool mask -> (height, width) bool, bilinear (align_corners=False) then > 0.5.

    Large outputs on the CPU are computed in bands of rows, reproducing the arithmetic of ATen's
    CPU kernel (the same bits as ``F.interpolate``), so no float32 copy of the full-resolution
    mask exists: 1 byte per output pixel plus one band.
    """
    if mask.device.type != "cpu" or height * width <= UPSAMPLE_BAND_PIXELS:
        resized = F.interpolate(mask.float()[None, None], size=(height, width), mode="bilinear", align_corners=False)
        return resized[0, 0] > 0.5
    return _upsample_banded(mask, height, width, UPSAMPLE_BAND_PIXELS)


def _bilinear_axis(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights along one axis, computed as ATen's CPU kernel does (float32,
    the source coordinate with one rounding, as a fused multiply-add)."""
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    destination = torch.arange(out_size, dtype=torch.float32) + 0.5
    if in_size == out_size:
        real = torch.arange(out_size, dtype=torch.float32)
    else:
        real = (scale.double() * destination.double() - 0.5).float().clamp_(min=0)
    low = real.floor().long().clamp_(max=in_size - 1)
    lambda1 = (real - low).clamp_(0, 1)
    high = low + (low < in_size - 1).long()
    return low, high, 1 - lambda1, lambda1


def _upsample_banded(mask: torch.Tensor, height: int, width: int, band_pixels: int) -> torch.Tensor:
    """``upsample_mask`` a band of output rows at a time (about ``band_pixels`` float32 values each)."""
    source = mask.float()
    row0, row1, row_w0, row_w1 = _bilinear_axis(source.shape[0], height)
    col0, col1, col_w0, col_w1 = _bilinear_axis(source.shape[1], width)
    out = torch.empty((height, width), dtype=torch.bool)
    rows = max(1, band_pixels // width)
    for top in range(0, height, rows):
        band = slice(top, top + rows)
        needed, inverse = torch.unique(torch.cat([row0[band], row1[band]]), return_inverse=True)
        picked = source[needed]
        across = picked[:, col0] * col_w0 + picked[:, col1] * col_w1  # horizontal pass, per source row
        upper, lower = inverse.split(len(inverse) // 2)
        first = across[upper] * row_w0[band, None]
        second = across[lower] * row_w1[band, None]
        value = first + second
        out[band] = value > 0.5
        # ATen adds the first product to the rounded second one with one rounding (a fused
        # multiply-add): near the threshold, where that decides, redo it so in float64.
        close = (value - 0.5).abs_() < 1e-6
        if close.any():
            weights = row_w0[band, None].expand_as(value)[close].double()
            fused = second[close].double() + across[upper][close].double() * weights
            out[band][close] = fused.float() > 0.5
    return out


@dataclass
class SegmentationTrace:
    """Every intermediate of one prediction at grid resolution (for diagnostics and parity)."""

    prototype: torch.Tensor
    similarity: torch.Tensor
    forward: torch.Tensor
    votes: torch.Tensor
    candidates: torch.Tensor
    aggregation: Aggregation | None  # None: empty candidate mask, early return
    mask: torch.Tensor  # (h, w) bool
    clustering_ms: float = 0.0


def segment_grid(target_features: torch.Tensor, target_debiased: torch.Tensor,
                 refs_debiased: Sequence[torch.Tensor], ref_masks: Sequence[torch.Tensor],
                 tau: float, merge_threshold: float,
                 cluster: Callable[[torch.Tensor, float], torch.Tensor] = cluster_patches) -> SegmentationTrace:
    """Stages 2-6: the grid-resolution prediction for one target and any number of shots.

    ``cluster`` maps (N, C) normalised features and tau to labels (the benchmark passes sklearn's).
    """
    prototype = reference_prototype(refs_debiased, ref_masks)
    similarity, forward = forward_candidates(target_debiased, prototype)
    votes = backward_votes(target_debiased, refs_debiased, ref_masks)
    candidates = candidate_mask(forward, votes, len(refs_debiased))
    if not candidates.any():
        return SegmentationTrace(prototype, similarity, forward, votes, candidates, None, candidates)
    channels, h, w = target_features.shape
    start = time.perf_counter()
    labels = cluster(target_features.reshape(channels, -1).T.contiguous(), tau).reshape(h, w)
    clustering_ms = (time.perf_counter() - start) * 1000.0
    aggregation = aggregate_clusters(labels, candidates, similarity, prototype, target_features,
                                     target_debiased, merge_threshold)
    return SegmentationTrace(prototype, similarity, forward, votes, candidates, aggregation,
                             aggregation.mask, clustering_ms)


def match_keypoints(
    ref_features: torch.Tensor, target_features: torch.Tensor, keypoints: torch.Tensor,
    ref_size: tuple[int, int], target_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kernel soft-argmax correspondence.

    ``keypoints`` (N, 2) are (x, y) in reference pixels; sizes are (H, W). Returns the target
    points (N, 2) in target pixels, the grid points (N, 2), and the peak cosine similarity (N,).
    """
    _, h, w = ref_features.shape
    scaled = keypoints.clone().float()
    scaled[:, 0] *= w / ref_size[1]
    scaled[:, 1] *= h / ref_size[0]
    cells = scaled.round().long()
    cols = cells[:, 0].clamp(0, w - 1)
    rows = cells[:, 1].clamp(0, h - 1)
    descriptors = ref_features[:, rows, cols].T  # (N, C)
    similarity = descriptors @ target_features.reshape(target_features.shape[0], -1)  # (N, h*w)
    grid_points = kernel_soft_argmax(similarity, h, w)
    points = grid_points.clone()
    points[:, 0] *= target_size[1] / w
    points[:, 1] *= target_size[0] / h
    return points, grid_points, similarity.max(dim=1).values


def kernel_soft_argmax(similarity: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, h*w) similarity -> (N, 2) expected (x, y) grid position.

    The map is multiplied by a Gaussian (sigma 7 cells) centred on its argmax, then a softmax with
    temperature 0.04 weighs the cell coordinates.
    """
    ys = torch.linspace(0, h - 1, h, device=similarity.device)
    xs = torch.linspace(0, w - 1, w, device=similarity.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    grid_x, grid_y = grid_x.reshape(1, -1), grid_y.reshape(1, -1)
    peak = similarity.argmax(dim=1, keepdim=True)
    peak_y = (peak // w).float()
    peak_x = (peak % w).float()
    gauss = torch.exp(-((grid_x - peak_x) ** 2 + (grid_y - peak_y) ** 2) / (2 * KERNEL_SIGMA**2))
    scores = gauss * similarity
    scores = scores - scores.max(dim=1, keepdim=True).values
    weights = torch.exp(scores / SOFTMAX_TEMPERATURE)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return torch.stack([(weights * grid_x).sum(dim=1), (weights * grid_y).sum(dim=1)], dim=1)
