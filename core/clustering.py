"""Average-linkage clustering of patch features, cut at cosine distance ``1 - tau``.

Reproduces the partition of the official INSID3 step::

    D = (1 - (X @ X.T).clamp(-1, 1)).cpu().numpy()
    AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                            distance_threshold=1 - tau).fit_predict(D)

sklearn reads the upper triangle of the float32 ``D`` and scipy merges in float64; the clusters are
the components of the merges whose height is ``< 1 - tau``.  Average linkage is reducible, so all
pairs of mutual nearest neighbours below the threshold can be merged in the same round (parallel
reciprocal-nearest-neighbour merging): this builds the same dendrogram as scipy's nearest-neighbour
chain, up to the resolution of exact ties.  Distances are Lance-Williams updated in float64 like
scipy's, and a cluster whose nearest neighbour is at ``>= 1 - tau`` is final and leaves the game.

Storage: distances between two singletons stay in the float32 matrix (built in place in the Gram
matrix's storage); a merged cluster owns one float64 row of distances to every singleton and every
merged cluster.  Clusters have ids: ``id < L`` is a singleton (a row of the float32 matrix),
``id = L + r`` the merged cluster of float64 row ``r``.  Both matrices are compacted when half of
the ids are gone.  Everything is torch ops on the features' device.
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
    """Clusters that may still merge below the threshold; see the module docstring for ids."""

    threshold: float
    single: torch.Tensor  # (L, L) float32 distances between singletons, inf diagonal
    rows: torch.Tensor  # (R, L + R) float64 distance rows of merged clusters
    used_rows: int  # rows[:used_rows] have been written at least once
    free_rows: torch.Tensor  # written rows whose cluster is gone
    size: torch.Tensor  # (L + R,) float64 cluster sizes
    active: torch.Tensor  # (L + R,) bool: the id is a live cluster with a neighbour below threshold
    nn: torch.Tensor  # (L + R,) int64 id of the nearest active cluster
    nnd: torch.Tensor  # (L + R,) float64 distance to it
    origin: torch.Tensor  # (L + R,) int64 original patch representing the cluster
    parent: torch.Tensor  # (N,) int64 merge forest over original patches

    @classmethod
    def start(cls, dist: torch.Tensor, threshold: float) -> _State:
        n, device = dist.shape[0], dist.device
        n_rows = n // 2
        nnd, nn = dist.min(dim=1)
        slots = torch.arange(n, device=device)
        pad = torch.zeros(n_rows, dtype=torch.int64, device=device)
        state = cls(
            threshold=threshold,
            single=dist,
            rows=torch.empty(n_rows, n + n_rows, dtype=torch.float64, device=device),
            used_rows=0,
            free_rows=slots[:0],
            size=torch.ones(n + n_rows, dtype=torch.float64, device=device),
            active=torch.cat([nnd < threshold, pad.bool()]),
            nn=torch.cat([nn, pad]),
            nnd=torch.cat([nnd.double(), pad.double() + _INF]),
            origin=torch.cat([slots, pad]),
            parent=slots.clone(),
        )
        return state

    @property
    def n_single(self) -> int:
        return self.single.shape[0]

    def merge_round(self) -> bool:
        """Merge every mutual-nearest pair below the threshold; False once nothing is left to merge."""
        ids = torch.arange(self.nn.shape[0], device=self.nn.device)
        mutual = self.active & (self.nn[self.nn] == ids) & (ids < self.nn)
        first, second = ids[mutual], self.nn[mutual]
        if first.numel() == 0:
            return False
        merged, new_ids = self._merge(first, second)
        self._refresh_neighbours(first, second, merged, new_ids)
        self.active &= self.nnd < self.threshold
        live = int(self.active.sum())
        if live * 2 <= self.n_single + self.used_rows and self.n_single + self.used_rows > _MIN_COMPACT:
            self._compact()
        return True

    def _distance_rows(self, ids: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Write into `out` (k, W) the float64 distances from clusters `ids` to the ids ``< W``.

        Entries of ids that are not active are garbage.
        """
        n_single, width = self.n_single, out.shape[1]
        is_single = ids < n_single
        pos = is_single.nonzero().squeeze(1)
        if pos.numel():
            singles = ids[pos]
            block = torch.empty(pos.numel(), width, dtype=torch.float64, device=ids.device)
            block[:, :n_single] = self.single.index_select(0, singles)
            block[:, n_single:] = self.rows[: width - n_single].index_select(1, singles).T
            out.index_copy_(0, pos, block)
        pos = (~is_single).nonzero().squeeze(1)
        if pos.numel():
            out.index_copy_(0, pos, self.rows[:, :width].index_select(0, ids[pos] - n_single))
        return out

    def _merge(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lance-Williams rows of the clusters ``first ∪ second``, stored; returns (rows, new ids)."""
        n_single, width = self.n_single, self.n_single + self.used_rows
        row = torch.where(first >= n_single, first, torch.where(second >= n_single, second, -1)) - n_single
        fresh = row < 0
        n_fresh = int(fresh.sum())
        reuse = self.free_rows[:n_fresh]
        extra = torch.arange(self.used_rows, self.used_rows + n_fresh - reuse.numel(), device=row.device)
        row[fresh] = torch.cat([reuse, extra])
        self.free_rows = torch.cat([self.free_rows[n_fresh:], second[first >= n_single] - n_single])
        self.used_rows += extra.numel()
        new_ids = row + n_single

        n_first, n_second = self.size[first], self.size[second]
        total = n_first + n_second
        merged = torch.empty(first.numel(), n_single + self.used_rows, dtype=torch.float64, device=row.device)
        old = self._distance_rows(first, merged[:, :width]).mul_(n_first[:, None])
        old += self._distance_rows(second, torch.empty_like(old)).mul_(n_second[:, None])
        old /= total[:, None]
        # Between two new clusters, the one listed first is merged first (row, then column update).
        pair = (old[:, first] * n_first + old[:, second] * n_second) / total
        pair = torch.triu(pair, 1)
        pair = pair + pair.T
        pair.diagonal().fill_(_INF)
        merged[:, new_ids] = pair

        self.parent[self.origin[second]] = self.origin[first]
        self.origin[new_ids] = self.origin[first]
        self.size[new_ids] = total
        self.active[first] = False
        self.active[second] = False
        self.active[new_ids] = True
        merged.masked_fill_(~self.active[: merged.shape[1]], _INF)
        self.rows[row, : merged.shape[1]] = merged
        self.rows[: self.used_rows].index_copy_(1, new_ids, merged[:, n_single:].T)
        return merged, new_ids

    def _refresh_neighbours(
        self, first: torch.Tensor, second: torch.Tensor, merged: torch.Tensor, new_ids: torch.Tensor
    ) -> None:
        """New clusters take their row minimum; rows that pointed at a merged cluster are recomputed."""
        touched = torch.zeros_like(self.active)
        touched[first] = True
        touched[second] = True
        stale = self.active & touched[self.nn]
        stale[new_ids] = False
        self.nnd[new_ids], self.nn[new_ids] = merged.min(dim=1)
        stale_ids = stale.nonzero().squeeze(1)
        if stale_ids.numel():
            width = merged.shape[1]
            rows = torch.empty(stale_ids.numel(), width, dtype=torch.float64, device=merged.device)
            self._distance_rows(stale_ids, rows).masked_fill_(~self.active[:width], _INF)
            self.nnd[stale_ids], self.nn[stale_ids] = rows.min(dim=1)

    def _compact(self) -> None:
        """Keep only the active ids: singletons first, then merged clusters, in both matrices."""
        n_single = self.n_single
        live = self.active.nonzero().squeeze(1)
        singles = live[live < n_single]
        merged = live[live >= n_single] - n_single
        n_s, n_m = singles.numel(), merged.numel()
        n_rows = n_m + n_s // 2
        new_id = torch.full_like(self.nn, -1)
        new_id[singles] = torch.arange(n_s, device=live.device)
        new_id[merged + n_single] = torch.arange(n_s, n_s + n_m, device=live.device)
        rows = torch.empty(n_rows, n_s + n_rows, dtype=torch.float64, device=live.device)
        kept = self.rows.index_select(0, merged)
        rows[:n_m, :n_s] = kept.index_select(1, singles)
        rows[:n_m, n_s : n_s + n_m] = kept.index_select(1, merged + n_single)
        self.rows, self.used_rows, self.free_rows = rows, n_m, merged[:0]
        self.single = self.single.index_select(0, singles).index_select(1, singles)
        order = torch.cat([singles, merged + n_single])
        pad = n_rows - n_m
        self.size = torch.cat([self.size[order], self.size.new_ones(pad)])
        self.nnd = torch.cat([self.nnd[order], self.nnd.new_full((pad,), _INF)])
        self.nn = torch.cat([new_id[self.nn[order]], self.nn.new_zeros(pad)])
        self.origin = torch.cat([self.origin[order], self.origin.new_zeros(pad)])
        self.active = torch.cat([self.active[order], self.active.new_zeros(pad)])
