"""core.clustering gives exactly sklearn's partition (the official INSID3 clustering step)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import linkage
from sklearn.cluster import AgglomerativeClustering

from core.clustering import _chain_labels, _cosine_distances, _mirror_upper, _round_labels, cluster_patches

METHODS = ["public", "chain", "rounds"]


def run(method: str, features: torch.Tensor, tau: float) -> torch.Tensor:
    """Labels by the public function, or by one of its two algorithms on the same distances."""
    if method == "public":
        return cluster_patches(features, tau)
    algorithm = _chain_labels if method == "chain" else _round_labels
    return algorithm(_cosine_distances(features), 1.0 - tau)


def official_labels(features: torch.Tensor, tau: float) -> np.ndarray:
    """The official code: float32 cosine distances, sklearn average linkage cut at 1 - tau."""
    similarity = (features @ features.T).clamp(-1, 1)
    distances = (1.0 - similarity).cpu().numpy()
    return AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=1 - tau
    ).fit_predict(distances)


def co_membership(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    labels = np.asarray(labels)
    return labels[:, None] == labels[None, :]


def assert_same_partition(ours: torch.Tensor, expected: np.ndarray) -> None:
    assert ours.shape == (len(expected),)
    mismatched = int((co_membership(ours.cpu()) != co_membership(expected)).sum()) // 2
    assert mismatched == 0, f"{mismatched} patch pairs grouped differently"


def normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1, eps=1e-12)


def random_features(n: int, c: int, seed: int) -> torch.Tensor:
    return normalise(torch.randn(n, c, generator=torch.Generator().manual_seed(seed)))


def dino_like_features(n: int, c: int = 64, n_directions: int = 24, seed: int = 0) -> torch.Tensor:
    """Patches of a few semantic directions, some boundary mixtures of two, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    directions = normalise(torch.randn(n_directions, c, generator=gen))
    first = torch.randint(0, n_directions, (n,), generator=gen)
    second = torch.randint(0, n_directions, (n,), generator=gen)
    weight = torch.rand(n, 1, generator=gen)
    weight = torch.where(torch.rand(n, 1, generator=gen) < 0.1, weight, torch.ones(n, 1))
    noise = 0.4 + 0.3 * torch.rand(n_directions, 1, generator=gen)[first]
    mixed = weight * directions[first] + (1 - weight) * directions[second]
    return normalise(mixed + noise * torch.randn(n, c, generator=gen) / c**0.5)


def official_linkage(features: torch.Tensor) -> np.ndarray:
    """scipy's merges on the official distances (sorted by height), as sklearn computes them."""
    distances = (1.0 - (features @ features.T).clamp(-1, 1)).numpy()
    return linkage(distances[np.triu_indices(len(distances), k=1)], method="average")


def merge_heights(features: torch.Tensor) -> np.ndarray:
    return official_linkage(features)[:, 2]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [2, 3, 5, 17, 64, 257])
@pytest.mark.parametrize("tau", [0.0, 0.2, 0.6])
def test_random_features_match_sklearn(method: str, n: int, tau: float) -> None:
    features = random_features(n, 8, seed=n)
    assert_same_partition(run(method, features, tau), official_labels(features, tau))


@pytest.mark.parametrize("method", ["chain", "rounds"])
@pytest.mark.parametrize(("n", "seed"), [(300, 0), (1000, 1), (2000, 2)])
@pytest.mark.parametrize("tau", [0.4, 0.6, 0.8])
def test_clustered_features_match_sklearn(method: str, n: int, seed: int, tau: float) -> None:
    features = dino_like_features(n, seed=seed)
    expected = official_labels(features, tau)
    assert 1 < expected.max() + 1 < n
    assert_same_partition(run(method, features, tau), expected)


def test_large_grid_matches_sklearn() -> None:
    """Above the size where the CPU switches from scipy's chain to the torch rounds."""
    features = dino_like_features(3000, seed=8)
    assert_same_partition(cluster_patches(features, 0.6), official_labels(features, 0.6))


@pytest.mark.parametrize("method", METHODS)
def test_many_compactions_match_sklearn(method: str) -> None:
    """Few directions: nearly everything merges, through several compactions of the storage."""
    features = dino_like_features(1500, c=32, n_directions=6, seed=5)
    heights = merge_heights(features)
    tau = 1.0 - float(heights[int(0.99 * len(heights))])
    assert_same_partition(run(method, features, tau), official_labels(features, tau))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("quantile", [0.1, 0.3, 0.5, 0.7, 0.9, 0.97])
def test_threshold_between_two_merge_heights(method: str, quantile: float) -> None:
    """The cut falls exactly between two consecutive merges, wherever it is in the tree."""
    features = dino_like_features(400, seed=7)
    heights = merge_heights(features)
    index = int(quantile * (len(heights) - 1))
    tau = 1.0 - float(heights[index] + heights[index + 1]) / 2
    assert_same_partition(run(method, features, tau), official_labels(features, tau))


@pytest.mark.parametrize("method", METHODS)
def test_threshold_equal_to_merge_heights(method: str) -> None:
    """A merge exactly at 1 - tau is not taken (strict <), one a float64 step below it is.

    The torch rounds update distances in another order than scipy's chain, so a merge of two
    larger clusters may differ from scipy's in the last bit of its height: for them only merges of
    two patches (exact float32 heights) can sit exactly on the threshold.
    """
    features = dino_like_features(300, seed=3)
    merges = official_linkage(features)
    if method == "rounds":
        merges = merges[(merges[:, 0] < 300) & (merges[:, 1] < 300)]
    checked = 0
    for height in merges[::5, 2]:
        for threshold in (float(height), float(np.nextafter(height, 2.0))):
            tau = 1.0 - threshold
            if 1.0 - tau == threshold:
                assert_same_partition(run(method, features, tau), official_labels(features, tau))
                checked += 1
    assert checked >= 10


@pytest.mark.parametrize("method", METHODS)
def test_near_threshold_pairs_match_sklearn(method: str) -> None:
    """Many pairs whose distance is within float32 rounding of the threshold."""
    gen = torch.Generator().manual_seed(11)
    base = normalise(torch.randn(200, 16, generator=gen))
    angle = torch.full((200, 1), float(np.arccos(0.5)))
    angle += 1e-7 * torch.randn(200, 1, generator=gen)
    other = normalise(torch.randn(200, 16, generator=gen))
    other = normalise(other - (other * base).sum(1, keepdim=True) * base)
    features = torch.cat([base, torch.cos(angle) * base + torch.sin(angle) * other])
    assert_same_partition(run(method, features, 0.5), official_labels(features, 0.5))


@pytest.mark.parametrize("method", METHODS)
def test_duplicate_patches_form_clusters(method: str) -> None:
    features = random_features(6, 8, seed=1).repeat_interleave(5, dim=0)
    labels = run(method, features, 0.99)
    assert labels.unique().numel() == 6
    assert_same_partition(labels, official_labels(features, 0.99))


def test_single_patch() -> None:
    labels = cluster_patches(random_features(1, 8, seed=0), 0.6)
    assert labels.tolist() == [0]
    assert labels.dtype == torch.int64


def test_two_patches() -> None:
    close = normalise(torch.tensor([[1.0, 0.0], [1.0, 0.1]]))
    far = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert cluster_patches(close, 0.6).tolist() == [0, 0]
    assert cluster_patches(far, 0.6).tolist() == [0, 1]


def test_tau_at_least_one_keeps_every_patch_alone() -> None:
    features = random_features(50, 4, seed=2)
    assert_same_partition(cluster_patches(features, 1.0), official_labels(features, 1.0))
    assert cluster_patches(features, 1.5).tolist() == list(range(50))


@pytest.mark.parametrize("method", METHODS)
def test_tau_below_minus_one_gives_one_cluster(method: str) -> None:
    features = random_features(50, 4, seed=2)
    assert run(method, features, -1.5).tolist() == [0] * 50
    assert_same_partition(run(method, features, -1.5), official_labels(features, -1.5))


@pytest.mark.parametrize("method", METHODS)
def test_antipodal_patches_at_tau_minus_one(method: str) -> None:
    """Distance 2 is not < 2: opposite patches stay apart at tau = -1."""
    features = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert run(method, features, -1.0).tolist() == [0, 1]
    assert run(method, features, -1.01).tolist() == [0, 0]


@pytest.mark.parametrize("method", METHODS)
def test_labels_are_contiguous_int64_on_the_input_device(method: str) -> None:
    labels = run(method, dino_like_features(200, seed=4), 0.6)
    assert labels.dtype == torch.int64
    assert labels.device == torch.device("cpu")
    assert sorted(labels.unique().tolist()) == list(range(int(labels.max()) + 1))


@pytest.mark.parametrize("method", METHODS)
def test_half_precision_features_match_sklearn(method: str) -> None:
    """The official step computes in the features' dtype; float16 distances widen exactly."""
    features = dino_like_features(300, seed=10).half()
    assert_same_partition(run(method, features, 0.6), official_labels(features, 0.6))


def test_bfloat16_features_give_a_labelling() -> None:
    labels = cluster_patches(dino_like_features(300, seed=10).bfloat16(), 0.6)
    assert labels.dtype == torch.int64
    assert labels.shape == (300,)


def test_rejects_non_matrix_input() -> None:
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        cluster_patches(torch.zeros(4, 8, 8), 0.6)


def test_distances_are_the_official_float32_matrix() -> None:
    features = dino_like_features(700, seed=6)
    official = (1.0 - (features @ features.T).clamp(-1, 1)).numpy()
    ours = _cosine_distances(features).numpy()
    assert ours.dtype == np.float32
    assert np.array_equal(ours, official)


@pytest.mark.parametrize("algorithm", [_chain_labels, _round_labels])
def test_only_the_upper_triangle_is_read(algorithm: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """sklearn reads D[i, j] for i < j: what lies on and below the diagonal must not matter."""
    features = dino_like_features(500, seed=9)
    garbage = 2 * torch.rand(500, 500, generator=torch.Generator().manual_seed(9))
    dist = torch.triu(_cosine_distances(features), 1) + torch.tril(garbage)
    assert_same_partition(algorithm(dist, 0.4), official_labels(features, 0.6))


@pytest.mark.parametrize("n", [1, 2, 255, 256, 600])
def test_mirror_copies_the_upper_triangle(n: int) -> None:
    matrix = torch.randn(n, n, generator=torch.Generator().manual_seed(n))
    expected = torch.triu(matrix, 1) + torch.triu(matrix, 1).T + torch.diag(matrix.diagonal())
    _mirror_upper(matrix)
    assert torch.equal(matrix, expected)


@pytest.mark.parametrize("method", METHODS)
def test_parity_fixtures_cluster_labels(method: str, parity_dir: Path) -> None:
    checked = 0
    for path in sorted((parity_dir / "insid3").glob("case*.npz")):
        case = np.load(path)
        if "cluster_labels" not in case.files:
            continue
        feats = torch.from_numpy(case["tgt_feats"])
        features = normalise(feats.reshape(feats.shape[0], -1).T)
        expected = case["cluster_labels"].reshape(-1)
        assert_same_partition(run(method, features, float(case["tau"])), expected)
        checked += 1
    assert checked >= 1
