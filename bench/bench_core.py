"""Benchmark: an official-style INSID3 call versus this engine with cached reference features.

(a) official-style: every call encodes the references and the target together (one batch, like
    ``INSID3.predict_mask``) and clusters with sklearn;
(b) this engine: references encoded once (cached), each target encoded alone, fast clustering.
Both use the same random ViT-S/16 checkpoint (real weights cannot be downloaded here) on the CPU.
Each configuration runs in its own process so that peak RSS is its own. Also compares clustering
at N = 4096 patches (image size 1024) against sklearn, with identical partitions, and one
batched encoder call against a loop of single-image calls.

    .venv/bin/python bench/bench_core.py [--sizes 512 1024] [--shots 1 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _scene(seed: int, size: int = 640) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8)
    rows, cols = np.mgrid[: image.shape[0], :size]
    mask = (rows - image.shape[0] // 2) ** 2 + (cols - size // 2 + seed * 7) ** 2 < (size // 6) ** 2
    image[mask] = (200, 40, 40)
    return image, mask


def _sklearn_labels(features, tau: float):
    import torch
    from sklearn.cluster import AgglomerativeClustering

    distances = (1.0 - (features @ features.T).clamp(-1, 1)).numpy()
    labels = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                     distance_threshold=float(1.0 - tau)).fit_predict(distances)
    return torch.from_numpy(labels).long()


def _official_style(engine, refs, target, tau: float = 0.6) -> None:
    """One official-style prediction: encode refs + target together, sklearn clustering."""
    import torch

    from core import pipeline
    from core.debias import debias
    from core.images import load_image, mask_to_tensor, pixels_to_tensor, resize_square

    images = [load_image(image) for image, _ in refs] + [load_image(target)]
    batch = torch.stack([pixels_to_tensor(resize_square(image, engine.image_size)) for image in images])
    features = engine.encode_tensor(batch)
    debiased = debias(features, engine.basis)
    h, w = features.shape[-2:]
    masks = [pipeline.downsample_mask(mask_to_tensor(mask, engine.image_size), h, w) for _, mask in refs]
    trace = pipeline.segment_grid(features[-1], debiased[-1], list(debiased[:-1]), masks, tau, 0.2,
                                  cluster=_sklearn_labels)
    pipeline.upsample_mask(trace.mask, engine.image_size, engine.image_size)


def _measure(mode: str, weights: str, image_size: int, shots: int, repeats: int, queue) -> None:
    import torch

    from core.engine import Insid3

    torch.set_num_threads(2)
    engine = Insid3.build(model_size="small", weights=weights, image_size=image_size, device="cpu",
                          basis_cache_dir=tempfile.mkdtemp())
    refs = [_scene(seed) for seed in range(shots)]
    # Targets: the first reference's scene moved and re-noised, so that candidates (and clustering) occur.
    rng = np.random.default_rng(1)
    targets = [np.clip(np.roll(refs[0][0], 40 * (i + 1), axis=1).astype(int) + rng.integers(-20, 20, refs[0][0].shape),
                       0, 255).astype(np.uint8) for i in range(repeats + 1)]
    if mode == "engine":
        references = [engine.encode_reference(image, mask) for image, mask in refs]  # cached once
        run = lambda target: engine.segment(target, references)  # noqa: E731
    else:
        run = lambda target: _official_style(engine, refs, target)  # noqa: E731
    run(targets[0])  # warm-up
    times = []
    for target in targets[1:]:
        start = time.perf_counter()
        run(target)
        times.append(time.perf_counter() - start)
    queue.put((statistics.median(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _in_child(*args: object) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _clustering(weights: str) -> None:
    import torch

    from core.clustering import cluster_patches
    from core.engine import Insid3
    from core.parity import same_partition

    engine = Insid3.build(model_size="small", weights=weights, image_size=1024, device="cpu",
                          basis_cache_dir=tempfile.mkdtemp())
    features = engine.encode_images([_scene(42)[0]])[0].features
    flat = features.reshape(features.shape[0], -1).T.contiguous()
    times: dict[str, list[float]] = {"sklearn": [], "ours": []}
    for _ in range(3):
        for name, function in (("sklearn", _sklearn_labels), ("ours", cluster_patches)):
            start = time.perf_counter()
            labels = function(flat, 0.6)
            times[name].append(time.perf_counter() - start)
            if name == "sklearn":
                expected = labels
    identical = same_partition(cluster_patches(flat, 0.6).numpy(), expected.numpy())
    sk, ours = (statistics.median(times[n]) for n in ("sklearn", "ours"))
    print(f"\nclustering N={flat.shape[0]} C={flat.shape[1]} K={int(expected.max()) + 1}: sklearn {sk * 1000:.0f} ms, "
          f"ours {ours * 1000:.0f} ms, ratio {ours / sk:.3f} (target <= 0.25), identical partitions: {identical}")
    del torch


def _batching(weights: str, image_size: int = 512, count: int = 4) -> None:
    """One batched encoder call versus a loop of single-image calls (decides encoder_batch_size)."""
    import torch

    from core.engine import Insid3

    engine = Insid3.build(model_size="small", weights=weights, image_size=image_size, device="cpu",
                          basis_cache_dir=tempfile.mkdtemp())
    images = torch.randn(count, 3, image_size, image_size)
    loop, batched = [], []
    for _ in range(3):
        start = time.perf_counter()
        for index in range(count):
            engine.encode_tensor(images[index:index + 1])
        loop.append(time.perf_counter() - start)
        start = time.perf_counter()
        engine.encode_tensor(images)
        batched.append(time.perf_counter() - start)
    loop_s, batched_s = statistics.median(loop), statistics.median(batched)
    print(f"encoder, {count} images at {image_size}: loop {loop_s * 1000:.0f} ms, one batch {batched_s * 1000:.0f} ms, "
          f"batch/loop {batched_s / loop_s:.2f} (CPU default: loop, encoder_batch_size=1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from core.checkpoint import make_checkpoint

    weights = str(make_checkpoint("small", Path(tempfile.mkdtemp()) / "vits16_random.pth", seed=0))
    print("ViT-S/16 (random weights), CPU, median latency per target; peak RSS of each process")
    print(f"{'size':>5} {'shots':>5} {'official-style':>15} {'engine+cache':>13} {'speed-up':>9} "
          f"{'RSS official':>13} {'RSS engine':>11}")
    for size in args.sizes:
        for shots in args.shots:
            official, official_rss = _in_child("official", weights, size, shots, args.repeats)
            engine, engine_rss = _in_child("engine", weights, size, shots, args.repeats)
            print(f"{size:>5} {shots:>5} {official * 1000:>12.0f} ms {engine * 1000:>10.0f} ms "
                  f"{official / engine:>8.2f}x {official_rss:>10.0f} MB {engine_rss:>8.0f} MB", flush=True)
    _clustering(weights)
    _batching(weights)


if __name__ == "__main__":
    main()
