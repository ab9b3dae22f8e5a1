"""Benchmark: ``core.clustering.cluster_patches`` versus the official sklearn clustering step.

Features are drawn like DINO patch features: a few dozen semantic directions, some patches mixing
two of them (object boundaries), plus noise, so that the cut at ``1 - tau`` gives a realistic
number of clusters (tens to a couple of hundred). For each size the two sides alternate, and the
script prints the median (and min) time of:

* ``official``: ``D = (1 - (X @ X.T).clamp(-1, 1)).cpu().numpy()`` then
  ``AgglomerativeClustering(..., linkage="average", distance_threshold=1 - tau).fit_predict(D)``,
  split into the Gram part (``gram``) and ``fit_predict`` alone (``sklearn``);
* ``ours``: ``cluster_patches(X, tau)``, which computes the same Gram matrix itself, and
  ``ours - gram`` (our clustering after the common ``X @ X.T``, timed on its own);

the ratios ``sklearn / (ours - gram)`` (the clustering itself) and ``official / ours`` (the whole
step), and whether the partitions are identical. Machines shared with other work are noisy: compare
the mins too.

    .venv/bin/python bench/bench_clustering.py [--sizes 1024 4096] [--channels 384] [--tau 0.6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from sklearn.cluster import AgglomerativeClustering

from core.clustering import cluster_patches


def dino_like_features(n: int, channels: int, n_directions: int, seed: int) -> torch.Tensor:
    """(n, channels) L2-normalised patches: semantic directions, boundary mixtures, noise."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n_directions, channels, generator=gen), dim=1)
    first = torch.randint(0, n_directions, (n,), generator=gen)
    second = torch.randint(0, n_directions, (n,), generator=gen)
    weight = torch.rand(n, 1, generator=gen)
    weight = torch.where(torch.rand(n, 1, generator=gen) < 0.1, weight, torch.ones(n, 1))
    noise = 0.4 + 0.3 * torch.rand(n_directions, 1, generator=gen)[first]
    mixed = weight * directions[first] + (1 - weight) * directions[second]
    noisy = mixed + noise * torch.randn(n, channels, generator=gen) / channels**0.5
    return torch.nn.functional.normalize(noisy, dim=1)


def official(features: torch.Tensor, tau: float) -> tuple[np.ndarray, float, float]:
    """Labels of the official step, with the seconds of its Gram part and of ``fit_predict``."""
    start = time.perf_counter()
    distances = (1.0 - (features @ features.T).clamp(-1, 1)).cpu().numpy()
    gram_done = time.perf_counter()
    labels = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=1 - tau
    ).fit_predict(distances)
    return labels, gram_done - start, time.perf_counter() - gram_done


def same_partition(first: np.ndarray, second: np.ndarray) -> bool:
    pairs = set(zip(first.tolist(), second.tolist(), strict=True))
    return len(pairs) == len(set(first.tolist())) == len(set(second.tolist()))


def bench_size(n: int, channels: int, tau: float, repeats: int, seed: int) -> None:
    features = dino_like_features(n, channels, n_directions=40, seed=seed)
    times: dict[str, list[float]] = {"gram": [], "sklearn": [], "ours": [], "matmul": []}
    identical = True
    n_clusters = 0
    for _ in range(repeats + 1):  # the first round warms up both sides and is not counted
        expected, gram_s, sklearn_s = official(features, tau)
        start = time.perf_counter()
        ours = cluster_patches(features, tau).numpy()
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        features @ features.T
        matmul_s = time.perf_counter() - start
        identical &= same_partition(ours, expected)
        n_clusters = int(expected.max()) + 1
        for key, value in zip(times, (gram_s, sklearn_s, ours_s, matmul_s), strict=True):
            times[key].append(value)
    for values in times.values():
        del values[0]
    med = {key: statistics.median(values) * 1e3 for key, values in times.items()}
    low = {key: min(values) * 1e3 for key, values in times.items()}
    print(f"N={n} C={channels} tau={tau}: {n_clusters} clusters, identical partitions: {identical}")
    for label, stats in (("median", med), ("min", low)):
        mine = stats["ours"] - stats["matmul"]
        print(
            f"  {label:6s} official {stats['gram'] + stats['sklearn']:8.1f} ms "
            f"(gram {stats['gram']:6.1f} + sklearn {stats['sklearn']:7.1f}) | "
            f"ours {stats['ours']:7.1f} ms (X @ X.T {stats['matmul']:6.1f} + {mine:6.1f}) | "
            f"sklearn / (ours - gram) {stats['sklearn'] / mine:5.2f}x, "
            f"official / ours {(stats['gram'] + stats['sklearn']) / stats['ours']:5.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--tau", type=float, default=0.6)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for n in args.sizes:
        bench_size(n, args.channels, args.tau, args.repeats, args.seed)


if __name__ == "__main__":
    main()
