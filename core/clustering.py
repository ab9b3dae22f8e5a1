"""Average-linkage clustering of patch features, cut at cosine distance ``1 - tau``.

Reproduces the partition of the official INSID3 step::

    D = (1 - (X @ X.T).clamp(-1, 1)).cpu().numpy()
    AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                            distance_threshold=1 - tau).fit_predict(D)

sklearn reads the upper triangle of the float32 ``D`` and scipy merges in float64; the clusters are
the components of the merges whose height is ``< 1 - tau``.  Average linkage is reducible, so every
pair of mutual nearest neighbours below the threshold can be merged in the same round (parallel
reciprocal-nearest-neighbour merging) and gives the same dendrogram as scipy's nearest-neighbour
chain; only exact ties may be resolved differently.  Distances are Lance-Williams updated in
float64, like scipy, and a cluster whose nearest neighbour is at ``>= 1 - tau`` is final and leaves
the matrix.

Memory layout: distances between two singletons are read from the float32 matrix (in place in the
Gram matrix's storage, no float64 copy of it); each merged cluster owns a float64 row of distances to
every slot.  Both are compacted when half of the slots are gone.  All work is torch ops on the
features' device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_INF = float("inf")
_MIRROR_BLOCK = 512
_MIN_COMPACT = 64


def cluster_patches(features: torch.Tensor, tau: float) -> torch.Tensor:
    """(N, C) L2-normalised features -> (N,) int64 labels 0..K-1 on the features' device."""
    if features.dim() != 2:
        raise ValueError(f"features must be (N, C), got shape {tuple(features.shape)}")
    n, device = features.shape[0], features.device
    threshold = 1.0 - float(tau)
    if n <= 1 or threshold <= 0.0:
        return torch.arange(n, device=device)
    state = _State.start(cosine_distances(features), threshold)
    while state.merge_round():
        pass
    return _labels(state.parent)


def cosine_distances(features: torch.Tensor) -> torch.Tensor:
    """Official float32 distances ``1 - clamp(X @ X.T)``, symmetric from the upper triangle, inf diagonal."""
    dist = features @ features.T
    dist.clamp_(-1.0, 1.0).neg_().add_(1.0)
    dist = dist.float()
    _mirror_upper(dist)
    dist.diagonal().fill_(_INF)
    return dist


def _mirror_upper(matrix: torch.Tensor) -> None:
    """Copy the strict upper triangle onto the lower one, in place, block by block."""
    n = matrix.shape[0]
    for start in range(0, n, _MIRROR_BLOCK):
        stop = min(start + _MIRROR_BLOCK, n)
        matrix[start:stop, :start].copy_(matrix[:start, start:stop].T)
        block = matrix[start:stop, start:stop]
        block.copy_(torch.triu(block, 1) + torch.triu(block, 1).T)


def _labels(parent: torch.Tensor) -> torch.Tensor:
    """Resolve a merge forest (parent pointers) into labels 0..K-1 ordered by first member."""
    while True:
        grand = parent[parent]
        if torch.equal(grand, parent):
            break
        parent = grand
    return torch.unique(parent, return_inverse=True)[1]


@dataclass
class _State:
    """Clusters still below the threshold, addressed by slot (columns of both matrices)."""

    threshold: float
    single: torch.Tensor  # (L, L) float32: distances between singleton slots
    rows: torch.Tensor  # (R, L) float64: distance rows of merged clusters
    row_of: torch.Tensor  # (L,) int64: slot -> row in `rows`, -1 for a singleton
    free_rows: torch.Tensor  # rows of `rows` that can be reused
    next_row: int  # first never used row of `rows`
    size: torch.Tensor  # (L,) float64 cluster sizes
    active: torch.Tensor  # (L,) bool: cluster may still merge below the threshold
    nn: torch.Tensor  # (L,) int64 nearest active slot
    nnd: torch.Tensor  # (L,) float64 distance to it
    origin: torch.Tensor  # (L,) int64: slot -> original patch index
    parent: torch.Tensor  # (N,) int64 merge forest over original patches

    @classmethod
    def start(cls, dist: torch.Tensor, threshold: float) -> _State:
        n, device = dist.shape[0], dist.device
        nnd, nn = dist.min(dim=1)
        slots = torch.arange(n, device=device)
        state = cls(
            threshold=threshold,
            single=dist,
            rows=torch.empty(n // 2, n, dtype=torch.float64, device=device),
            row_of=torch.full((n,), -1, dtype=torch.int64, device=device),
            free_rows=slots[:0],
            next_row=0,
            size=torch.ones(n, dtype=torch.float64, device=device),
            active=nnd < threshold,
            nn=nn,
            nnd=nnd.double(),
            origin=slots,
            parent=slots.clone(),
        )
        return state

    def merge_round(self) -> bool:
        """Merge every mutual-nearest pair below the threshold; False once nothing is left to merge."""
        slots = torch.arange(self.nn.shape[0], device=self.nn.device)
        mutual = self.active & (self.nn[self.nn] == slots) & (slots < self.nn)
        keep, drop = slots[mutual], self.nn[mutual]
        if keep.numel() == 0:
            return False
        merged = self._merged_rows(keep, drop)
        self._store(keep, drop, merged)
        self._refresh_neighbours(keep, drop, merged)
        self.active &= self.nnd < self.threshold
        if self.active.sum() * 2 <= self.nn.shape[0] and self.nn.shape[0] > _MIN_COMPACT:
            self._compact()
        return True

    def _penalty(self) -> torch.Tensor:
        """0 for active slots, inf elsewhere (float64)."""
        zero = torch.zeros((), dtype=torch.float64, device=self.active.device)
        return torch.where(self.active, zero, _INF)

    def _distance_rows(self, slots: torch.Tensor) -> torch.Tensor:
        """Float64 distances from the clusters at `slots` to every slot (stale where inactive)."""
        row = self.row_of[slots]
        is_merged = row >= 0
        out = self.single[slots].double()
        if bool(is_merged.any()):
            out[is_merged] = self.rows[row[is_merged]]
        merged_slots = (self.active & (self.row_of >= 0)).nonzero().squeeze(1)
        if merged_slots.numel():
            out[:, merged_slots] = self.rows[self.row_of[merged_slots]][:, slots].T
        return out

    def _merged_rows(self, keep: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Lance-Williams rows of the new clusters ``keep ∪ drop`` (merged in the order of `keep`)."""
        n_keep, n_drop = self.size[keep], self.size[drop]
        total = n_keep + n_drop
        merged = n_keep[:, None] * self._distance_rows(keep) + n_drop[:, None] * self._distance_rows(drop)
        merged /= total[:, None]
        # Distances between two new clusters: the one merged first (smaller slot) is updated second.
        pair = (merged[:, keep] * n_keep + merged[:, drop] * n_drop) / total
        pair = torch.triu(pair, 1)
        pair = pair + pair.T
        pair.diagonal().fill_(_INF)
        merged[:, keep] = pair
        self.active[drop] = False
        merged += self._penalty()
        self.size[keep] = total
        return merged

    def _store(self, keep: torch.Tensor, drop: torch.Tensor, merged: torch.Tensor) -> None:
        """Write the new rows and the matching columns of the other merged clusters."""
        row_keep, row_drop = self.row_of[keep], self.row_of[drop]
        target = torch.where(row_keep >= 0, row_keep, row_drop)
        fresh = target < 0
        n_fresh = int(fresh.sum())
        freed = row_drop[(row_keep >= 0) & (row_drop >= 0)]
        reuse = self.free_rows[:n_fresh]
        new = torch.arange(self.next_row, self.next_row + n_fresh - reuse.numel(), device=keep.device)
        self.next_row += new.numel()
        target[fresh] = torch.cat([reuse, new])
        self.free_rows = torch.cat([self.free_rows[n_fresh:], freed])
        self.rows[target] = merged
        self.row_of[drop] = -1
        self.row_of[keep] = target
        others = (self.active & (self.row_of >= 0)).nonzero().squeeze(1)
        is_new = torch.zeros_like(self.active)
        is_new[keep] = True
        others = others[~is_new[others]]
        if others.numel():
            self.rows[self.row_of[others][:, None], keep[None, :]] = merged[:, others].T
        self.parent[self.origin[drop]] = self.origin[keep]

    def _refresh_neighbours(self, keep: torch.Tensor, drop: torch.Tensor, merged: torch.Tensor) -> None:
        """New clusters take their row minimum; rows that pointed at a merged cluster are recomputed."""
        self.nnd[keep], self.nn[keep] = merged.min(dim=1)
        touched = torch.zeros_like(self.active)
        touched[keep] = True
        touched[drop] = True
        stale = self.active & touched[self.nn]
        stale[keep] = False
        stale_slots = stale.nonzero().squeeze(1)
        if stale_slots.numel():
            rows = self._distance_rows(stale_slots) + self._penalty()
            self.nnd[stale_slots], self.nn[stale_slots] = rows.min(dim=1)

    def _compact(self) -> None:
        """Drop inactive slots from both matrices."""
        keep = self.active.nonzero().squeeze(1)
        new_slot = torch.full_like(self.nn, -1)
        new_slot[keep] = torch.arange(keep.numel(), device=keep.device)
        row = self.row_of[keep]
        is_merged = row >= 0
        n_merged = int(is_merged.sum())
        capacity = n_merged + (keep.numel() - n_merged) // 2 + 1
        rows = torch.empty(capacity, keep.numel(), dtype=torch.float64, device=keep.device)
        rows[:n_merged] = self.rows[row[is_merged]][:, keep]
        self.rows = rows
        self.row_of = torch.full_like(keep, -1)
        self.row_of[is_merged] = torch.arange(n_merged, device=keep.device)
        self.free_rows = keep[:0]
        self.next_row = n_merged
        self.single = self.single[keep][:, keep]
        self.size, self.nnd, self.origin = self.size[keep], self.nnd[keep], self.origin[keep]
        self.nn = new_slot[self.nn[keep]]
        self.active = self.active[keep]
