"""The CPU clustering kernel: scipy's average-linkage nearest-neighbour chain, compiled with numba.

Same visiting order, tie-breaking and float64 Lance-Williams arithmetic as scipy, on a dense
symmetric matrix with lazily synchronised columns and compaction, hence the same merges.
"""

from __future__ import annotations

import numba
import numpy as np

COMPACT_AT = 0.5  # start a new phase when this fraction of the base clusters is still alive
MIN_PHASE = 64  # below this many base clusters, never compact


def _jit(func):
    """``numba.njit`` with an on-disk cache when a cache directory is writable, without otherwise."""
    try:
        return numba.njit(cache=True, nogil=True)(func)
    except RuntimeError:  # no writable cache location: compile at first call in every process
        return numba.njit(nogil=True)(func)



@_jit
def _find(parent, i):
    """The root of ``i`` in the union-find forest ``parent`` (with path halving)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@_jit
def _sync(dist, x, size, log, log_len, last, synced):
    """Bring row ``x`` up to date. A merge rewrites only the merged cluster's own row; the other
    rows' entries for it are copied in lazily from that row, for the merges ``x`` has not seen
    (``log[synced[x]:log_len]``) whose cluster is still alive and was last updated by that entry."""
    row = dist[x]
    for t in range(synced[x], log_len):
        z = log[t]
        if last[z] == t and size[z] > 0 and z != x:
            row[z] = dist[z, x]
    synced[x] = log_len


@_jit
def _compact(dist, size, origin, chain, chain_length, alive):
    """A smaller dense matrix of the ``alive`` clusters (rows already synced), with their sizes and
    origins, and the chain renumbered into it."""
    m = dist.shape[0]
    keep = np.empty(alive, np.int64)
    new_position = np.full(m, -1, np.int64)
    count = 0
    for i in range(m):
        if size[i] > 0:
            keep[count] = i
            new_position[i] = count
            count += 1
    packed = np.empty((alive, alive), np.float64)
    for a in range(alive):
        row = dist[keep[a]]
        out = packed[a]
        for b in range(alive):
            out[b] = row[keep[b]]
    for j in range(chain_length):
        chain[j] = new_position[chain[j]]
    return packed, size[keep], origin[keep]


@_jit
def _grow_chain(dist, size, chain, chain_length, log, log_len, last, synced):
    """Extend the nearest-neighbour chain until its last two clusters are reciprocal nearest
    neighbours (scipy's visiting order and tie-breaking: the first, lowest index wins); returns
    them with their distance and the chain's length."""
    m = dist.shape[0]
    y = 0
    while True:
        x = chain[chain_length - 1]
        _sync(dist, x, size, log, log_len, last, synced)
        if chain_length > 1:
            y = chain[chain_length - 2]
            current = dist[x, y]
        else:
            current = np.inf
        row = dist[x]
        for i in range(m):
            if size[i] == 0 or i == x:
                continue
            if row[i] < current:
                current = row[i]
                y = i
        if chain_length > 1 and y == chain[chain_length - 2]:
            return x, y, current, chain_length
        chain[chain_length] = y
        chain_length += 1


@_jit
def _merge_rows(dist, size, x, y):
    """Merge cluster ``x`` into ``y``: row ``y`` gets the Lance-Williams average-linkage distances
    (float64, scipy's arithmetic) and ``x`` dies (size 0)."""
    nx = size[x]
    ny = size[y]
    total = nx + ny
    rx = dist[x]
    ry = dist[y]
    size[x] = 0.0
    size[y] = total
    for i in range(dist.shape[0]):
        if size[i] == 0 or i == y:
            continue
        ry[i] = (nx * rx[i] + ny * ry[i]) / total


@_jit
def _component_labels(parent):
    """Labels 0..K-1 of the union-find components, numbered in order of first appearance."""
    n = parent.shape[0]
    labels = np.empty(n, np.int64)
    first = np.full(n, -1, np.int64)
    k = 0
    for i in range(n):
        root = _find(parent, i)
        if first[root] < 0:
            first[root] = k
            k += 1
        labels[i] = first[root]
    return labels


@_jit
def chain_cut(dist, threshold):
    """scipy's average-linkage nearest-neighbour chain on the dense symmetric float64 ``dist``
    (N, N), keeping the merges below ``threshold``; returns the (N,) component labels.

    State: ``size[i]`` the number of patches in cluster slot ``i`` (0: dead); ``origin[i]`` a
    patch of slot ``i`` (slots are renumbered by compaction, patches never are); ``parent`` the
    union-find forest over patches of the kept merges; ``chain`` the nearest-neighbour chain.
    Lazy columns: a merge appends its surviving slot to ``log`` and updates only that slot's row;
    ``last[z]`` is the newest log entry of ``z``, ``synced[x]`` how much of the log row ``x`` has
    absorbed (see ``_sync``). Invariant: a row is exact once synced. When at most ``COMPACT_AT``
    of the slots are alive (and there are more than ``MIN_PHASE``), every row is synced and the
    matrix is compacted, which also empties the log.
    """
    n = dist.shape[0]
    size = np.ones(n, np.float64)
    origin = np.arange(n)
    parent = np.arange(n)
    chain = np.empty(n, np.int64)
    chain_length = 0
    alive = n
    log = np.empty(n, np.int64)
    last = np.full(n, -1, np.int64)
    synced = np.zeros(n, np.int64)
    log_len = 0
    for _ in range(n - 1):
        m = dist.shape[0]
        if alive <= m * COMPACT_AT and m > MIN_PHASE:
            for i in range(m):
                if size[i] > 0:
                    _sync(dist, i, size, log, log_len, last, synced)
            dist, size, origin = _compact(dist, size, origin, chain, chain_length, alive)
            log_len = 0
            last[:] = -1
            synced[:] = 0
        if chain_length == 0:
            chain_length = 1
            chain[0] = np.argmax(size > 0)
        x, y, current, chain_length = _grow_chain(dist, size, chain, chain_length, log, log_len, last, synced)
        chain_length -= 2
        if x > y:
            x, y = y, x
        _sync(dist, x, size, log, log_len, last, synced)
        _sync(dist, y, size, log, log_len, last, synced)
        if current < threshold:
            parent[_find(parent, origin[x])] = _find(parent, origin[y])
        _merge_rows(dist, size, x, y)
        alive -= 1
        log[log_len] = y
        last[y] = log_len
        log_len += 1
        synced[y] = log_len
    return _component_labels(parent)
