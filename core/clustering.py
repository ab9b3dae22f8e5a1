"""Average-linkage clustering of patch features, cut at cosine distance ``1 - tau``.

Reproduces the partition of the official INSID3 step::

    D = (1 - (X @ X.T).clamp(-1, 1)).cpu().numpy()
    AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                            distance_threshold=1 - tau).fit_predict(D)

sklearn passes the upper triangle of the float32 ``D`` to scipy's average linkage (float64
Lance-Williams updates); it keeps the merges whose height is ``< 1 - tau`` and labels their
components.  Two ways to get that partition:

* on CPU, scipy's nearest-neighbour chain compiled with numba (same visiting order, ties and
  float64 Lance-Williams arithmetic as scipy, on a dense symmetric matrix with lazily synchronised
  columns and compaction);
* on accelerators, parallel reciprocal-nearest-neighbour merging in torch.
  Average linkage is reducible, so all pairs of mutual nearest neighbours below the threshold can
  merge in the same round: the dendrogram is the one of scipy's nearest-neighbour chain up to the
  resolution of exact ties.  Distances are Lance-Williams updated in float64 like scipy's, and a
  cluster whose nearest neighbour is at ``>= 1 - tau`` is final and leaves the game.

Storage of the rounds, per phase: the ``K`` clusters alive at the start of the phase are *base*
clusters with a dense ``(K, K)`` distance matrix (the float32 distances themselves in the first
phase, float64 later); a cluster merged during the phase gets the next *merged* slot ``r`` (id
``K + r``), its distances to the base clusters in ``base_rows[r]`` and, for every id, the distance
to it in column ``r`` of ``merged_cols``.  Rows are read in one pass and new slots are written as
contiguous blocks.  A new phase (compaction into a smaller base matrix) starts when half of the
base is gone.
"""

from __future__ import annotations

import numpy as np
import torch

from core.chain_kernel import COMPACT_AT, MIN_PHASE, chain_cut

_INF = float("inf")
_MIRROR_BLOCK = 256  # rows per block when mirroring the upper triangle
_CHUNK_BYTES = 1 << 23  # CPU working set of one chunk of rows (fits the last-level cache)
_GROUP = 64  # columns per group in the two-level row minimum
_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


@torch.no_grad()
def cluster_patches(features: torch.Tensor, tau: float) -> torch.Tensor:
    """(N, C) L2-normalised features -> (N,) int64 labels 0..K-1 on the features' device."""
    if features.dim() != 2:
        raise ValueError(f"features must be (N, C), got shape {tuple(features.shape)}")
    n, device = features.shape[0], features.device
    threshold = 1.0 - float(tau)
    if n <= 1 or threshold <= 0.0:
        return torch.arange(n, device=device)
    dist = _cosine_distances(features)
    if device.type == "cpu":
        return _chain_labels(dist, threshold)
    return _round_labels(dist, threshold)


def warm_up() -> None:
    """Compile the CPU kernel now (about 1.6 s without numba's disk cache), not on the first request."""
    cluster_patches(torch.eye(3), 0.5)


def _chain_labels(dist: torch.Tensor, threshold: float) -> torch.Tensor:
    """sklearn's computation: scipy's average-linkage nearest-neighbour chain, cut at ``threshold``.

    Compiled on a dense symmetric float64 matrix with the same visiting order, tie-breaking and
    Lance-Williams arithmetic as scipy, hence the same merges and bitwise the same heights. Reads
    the upper triangle of ``dist``, which it overwrites with the symmetric matrix.
    """
    _mirror_upper(dist)
    dense = np.empty(dist.shape, dtype=np.float64)
    np.copyto(dense, dist.numpy())
    return torch.from_numpy(chain_cut(dense, float(threshold)))


def _round_labels(dist: torch.Tensor, threshold: float) -> torch.Tensor:
    """Parallel reciprocal-nearest-neighbour merging below the threshold (any device).

    Reads the upper triangle of `dist`, which it overwrites with the symmetric matrix.
    """
    _mirror_upper(dist)
    dist.diagonal().fill_(_INF)
    state = _State(dist, threshold)
    while state.merge_round():
        pass
    return _labels(state.parent)


def _cosine_distances(features: torch.Tensor) -> torch.Tensor:
    """The official distances ``1 - clamp(X @ X.T, -1, 1)``, computed in place, as float32."""
    n = features.shape[0]
    dist = torch.matmul(features, features.T, out=_empty((n, n), features.dtype, features.device))
    return dist.clamp_(-1.0, 1.0).neg_().add_(1.0).float()


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uninitialised tensor; on CPU backed by numpy, whose large buffers use transparent huge pages
    (much cheaper to fault in than torch's 4 KiB pages)."""
    if device.type == "cpu" and dtype in _NUMPY_DTYPES:
        return torch.from_numpy(np.empty(shape, dtype=_NUMPY_DTYPES[dtype]))
    return torch.empty(shape, dtype=dtype, device=device)


def _mirror_upper(matrix: torch.Tensor) -> None:
    """Copy the strict upper triangle onto the lower one, in place, one block-row at a time."""
    n = matrix.shape[0]
    for start in range(0, n, _MIRROR_BLOCK):
        stop = min(start + _MIRROR_BLOCK, n)
        block = matrix[start:stop, start:stop]
        block.copy_(torch.triu(block) + torch.triu(block, 1).T)
        if stop < n:
            flipped = torch.empty(n - stop, stop - start, dtype=matrix.dtype, device=matrix.device)
            flipped.copy_(matrix[start:stop, stop:].contiguous().T)
            matrix[stop:, start:stop] = flipped


def _labels(parent: torch.Tensor) -> torch.Tensor:
    """Resolve a merge forest (parent pointers) into labels 0..K-1, numbered by root patch."""
    while True:
        grand = parent[parent]
        if torch.equal(grand, parent):
            break
        parent = grand
    return torch.unique(parent, return_inverse=True)[1]


def _row_min(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``values.min(dim=1)`` (first index on ties), via a vectorised min over column groups."""
    width = values.shape[1]
    groups = width // _GROUP
    if groups < 2:
        return values.min(dim=1)
    group_min = values[:, : groups * _GROUP].unflatten(1, (groups, _GROUP)).amin(dim=2)
    if width > groups * _GROUP:
        group_min = torch.cat([group_min, values[:, groups * _GROUP :].amin(dim=1, keepdim=True)], dim=1)
    best, group = group_min.min(dim=1)
    offsets = torch.arange(_GROUP, device=values.device)
    columns = (group[:, None] * _GROUP + offsets).clamp_(max=width - 1)
    inner = values.gather(1, columns).argmin(dim=1, keepdim=True)
    return best, columns.gather(1, inner).squeeze(1)


def _chunks(n_rows: int, row_bytes: int, device: torch.device) -> list[slice]:
    """Row ranges of about ``_CHUNK_BYTES`` on CPU (to stay in cache), a single range elsewhere."""
    step = max(1, _CHUNK_BYTES // max(1, row_bytes)) if device.type == "cpu" else max(1, n_rows)
    return [slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


def _masked_row_min(
    matrix: torch.Tensor, rows: torch.Tensor, penalty: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 min and argmin of ``matrix[rows] + penalty`` (penalty: 0 or inf per column)."""
    if matrix.shape[1] == 0:
        return torch.full(rows.shape, _INF, dtype=torch.float64, device=rows.device), torch.zeros_like(rows)
    values, indices = [], []
    for part in _chunks(rows.numel(), matrix.shape[1] * matrix.element_size(), matrix.device):
        value, index = _row_min(matrix.index_select(0, rows[part]).add_(penalty))
        values.append(value)
        indices.append(index)
    return torch.cat(values).double(), torch.cat(indices)


class _State:
    """Clusters that may still merge below the threshold (see the module docstring for the layout)."""

    base: torch.Tensor  # (K, K) distances between base clusters, inf diagonal
    base_rows: torch.Tensor  # (R, K) float64: merged slot -> distances to the base clusters
    merged_cols: torch.Tensor  # (K + R, R) float64: id -> distances to the merged slots
    used: int  # merged slots taken in this phase
    size: torch.Tensor  # (K + R,) float64 cluster sizes
    active: torch.Tensor  # (K + R,) bool: live cluster with a neighbour below the threshold
    nn: torch.Tensor  # (K + R,) int64 id of the nearest active cluster
    nnd: torch.Tensor  # (K + R,) float64 distance to it
    origin: torch.Tensor  # (K + R,) int64 original patch representing the cluster

    def __init__(self, dist: torch.Tensor, threshold: float) -> None:
        self.threshold = threshold
        patches = torch.arange(dist.shape[0], device=dist.device)
        self.parent = patches.clone()  # merge forest over the original patches
        nnd, nn = _row_min(dist)
        nnd = nnd.double()
        self._new_phase(dist, torch.ones_like(nnd), nnd < threshold, nn, nnd, patches)

    @property
    def n_base(self) -> int:
        return self.base.shape[0]

    def merge_round(self) -> bool:
        """Merge every mutual-nearest pair below the threshold; False once nothing is left to merge."""
        first, second = self._mutual_pairs()
        if first.numel() == 0:
            return False
        if self.used + first.numel() > self.base_rows.shape[0]:
            self._compact()
            first, second = self._mutual_pairs()
        self._refresh(first, second, self._merge(first, second))
        self.active &= self.nnd < self.threshold
        live = int(self.active.sum())
        if live <= COMPACT_AT * self.n_base and self.n_base > MIN_PHASE:
            self._compact()
        return True

    def _mutual_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.arange(self.nn.shape[0], device=self.nn.device)
        mutual = self.active & (self.nn[self.nn] == ids) & (ids < self.nn)
        return ids[mutual], self.nn[mutual]

    def _scaled_rows(self, ids: torch.Tensor, scale: torch.Tensor, width: int) -> torch.Tensor:
        """``scale[:, None] *`` the float64 distances from `ids` (all base or all merged) to ids < width."""
        k = self.n_base
        out = torch.empty(ids.numel(), width, dtype=torch.float64, device=ids.device)
        torch.mul(self.merged_cols[:, : width - k].index_select(0, ids), scale, out=out[:, k:])
        if bool(ids[0] < k):
            torch.mul(self.base.index_select(0, ids), scale, out=out[:, :k])
        else:
            torch.mul(self.base_rows.index_select(0, ids - k), scale, out=out[:, :k])
        return out

    def _merge(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Merge the pairs into new slots: Lance-Williams rows, storage, nearest neighbours."""
        k, used, m = self.n_base, self.used, first.numel()
        width = k + used
        device = first.device
        # Group the pairs (base, base), (base, merged), (merged, merged) so that chunks are uniform.
        kind = (first >= k).long() + (second >= k).long()
        order = torch.argsort(kind, stable=True)
        first, second = first[order], second[order]
        bounds = torch.bincount(kind, minlength=3).cumsum(0).tolist()
        new_ids = torch.arange(width, width + m, device=device)
        n_first, n_second = self.size[first], self.size[second]
        total = n_first + n_second
        self.parent[self.origin[second]] = self.origin[first]
        self.origin[new_ids] = self.origin[first]
        self.size[new_ids] = total
        self.active[first] = False
        self.active[second] = False
        self.active[new_ids] = True
        self.used += m
        penalty = self._penalty(width)
        parts = torch.cat([first, second])
        cross = torch.empty(m, 2 * m, dtype=torch.float64, device=device)
        nnd = torch.empty(m, dtype=torch.float64, device=device)
        nn = torch.empty(m, dtype=torch.int64, device=device)
        for start, stop in zip([0, *bounds[:-1]], bounds, strict=True):
            for part in _chunks(stop - start, width * 8, device):
                rows = slice(start + part.start, start + part.stop)
                block = self._scaled_rows(first[rows], n_first[rows, None], width)
                block += self._scaled_rows(second[rows], n_second[rows, None], width)
                block /= total[rows, None]
                cross[rows] = block.index_select(1, parts)
                block += penalty
                self.base_rows[used + rows.start : used + rows.stop] = block[:, :k]
                self.merged_cols[:width, used + rows.start : used + rows.stop] = block.T
                self.merged_cols[width + rows.start : width + rows.stop, :used] = block[:, k:]
                nnd[rows], nn[rows] = _row_min(block)
        # Between two new clusters, the one listed first is merged first (row, then column update).
        pair = (cross[:, :m] * n_first + cross[:, m:] * n_second) / total
        pair = torch.triu(pair, 1)
        pair = pair + pair.T
        pair.diagonal().fill_(_INF)
        self.merged_cols[width : width + m, used : used + m] = pair
        pair_nnd, pair_nn = _row_min(pair)
        closer = pair_nnd < nnd
        self.nnd[new_ids] = torch.where(closer, pair_nnd, nnd)
        self.nn[new_ids] = torch.where(closer, pair_nn + width, nn)
        return new_ids

    def _penalty(self, width: int) -> torch.Tensor:
        """0 for the active ids ``< width``, inf for the others (float64)."""
        zero = torch.zeros((), dtype=torch.float64, device=self.active.device)
        return torch.where(self.active[:width], zero, _INF)

    def _refresh(self, first: torch.Tensor, second: torch.Tensor, new_ids: torch.Tensor) -> None:
        """Recompute the nearest neighbour of the rows that pointed at a merged cluster."""
        touched = torch.zeros_like(self.active)
        touched[first] = True
        touched[second] = True
        stale = self.active & touched[self.nn]
        stale[new_ids] = False
        ids = stale.nonzero().squeeze(1)
        if ids.numel():
            self.nnd[ids], self.nn[ids] = self._nearest(ids)

    def _nearest(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest active cluster of each id (base clusters win ties, as the lower ids)."""
        k, used = self.n_base, self.used
        penalty = self._penalty(k + used)
        value, index = _masked_row_min(self.merged_cols[:, :used], ids, penalty[k:])
        index += k
        is_base = ids < k
        for pos, matrix, rows in (
            (is_base.nonzero().squeeze(1), self.base, ids),
            ((~is_base).nonzero().squeeze(1), self.base_rows, ids - k),
        ):
            if pos.numel():
                base_value, base_index = _masked_row_min(matrix, rows[pos], penalty[:k].to(matrix.dtype))
                closer = base_value <= value[pos]
                value[pos] = torch.where(closer, base_value, value[pos])
                index[pos] = torch.where(closer, base_index, index[pos])
        return value, index

    def _compact(self) -> None:
        """Start a new phase whose base clusters are the active ones (float64 dense matrix)."""
        k, used = self.n_base, self.used
        live = self.active.nonzero().squeeze(1)
        base_ids, slots = live[live < k], live[live >= k] - k
        n_b = base_ids.numel()
        dist = _empty((live.numel(),) * 2, torch.float64, live.device)
        dist[:n_b, :n_b] = self.base.index_select(0, base_ids).index_select(1, base_ids)
        dist[n_b:, :n_b] = self.base_rows.index_select(0, slots).index_select(1, base_ids)
        dist[:, n_b:] = self.merged_cols[:, :used].index_select(0, live).index_select(1, slots)
        new_id = torch.full_like(self.nn, -1)
        new_id[live] = torch.arange(live.numel(), device=live.device)
        self._new_phase(
            dist, self.size[live], self.active[live], new_id[self.nn[live]], self.nnd[live], self.origin[live]
        )

    def _new_phase(
        self,
        dist: torch.Tensor,
        size: torch.Tensor,
        active: torch.Tensor,
        nn: torch.Tensor,
        nnd: torch.Tensor,
        origin: torch.Tensor,
    ) -> None:
        k = dist.shape[0]
        slots = k // 2 + 1
        device = dist.device
        self.base, self.used = dist, 0
        self.base_rows = _empty((slots, k), torch.float64, device)
        self.merged_cols = _empty((k + slots, slots), torch.float64, device)
        self.size = torch.cat([size, size.new_ones(slots)])
        self.active = torch.cat([active, active.new_zeros(slots)])
        self.nn = torch.cat([nn, nn.new_zeros(slots)])
        self.nnd = torch.cat([nnd, nnd.new_full((slots,), _INF)])
        self.origin = torch.cat([origin, origin.new_zeros(slots)])
