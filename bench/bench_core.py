"""Benchmark: an official-style INSID3 call versus this engine with cached reference features.

(a) official-style: every call encodes the references and the target together (one batch, like
    ``INSID3.predict_mask``) and clusters with sklearn;
(b) this engine: references encoded once (cached), each target encoded alone, fast clustering,
    once per encoder runtime (``--runtime``: torch, onnxruntime, openvino).
All use the same random ViT-S/16 checkpoint (real weights cannot be downloaded here) on the CPU.
Each configuration runs in its own process so that peak RSS is its own; the runtimes' exports are
made first (in their own process) so the engine processes start warm, and their build time is a
warm restart. Also: the encoder alone per runtime, timed interleaved with torch eager (with what
each runtime did with attention); masks of each runtime against torch's on random scenes;
clustering at N = 4096 against sklearn; one batched encoder call against a loop of single calls.

    .venv/bin/python bench/bench_core.py [--runtime torch onnxruntime openvino] [--sizes 512 1024]
        [--shots 1 5] [--repeats 3] [--mask-scenes 50]
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


def _inputs(image_size: int, shots: int, repeats: int):
    refs = [_scene(seed) for seed in range(shots)]
    # Targets: the first reference's scene moved and re-noised, so that candidates (and clustering) occur.
    rng = np.random.default_rng(1)
    targets = [np.clip(np.roll(refs[0][0], 40 * (i + 1), axis=1).astype(int) + rng.integers(-20, 20, refs[0][0].shape),
                       0, 255).astype(np.uint8) for i in range(repeats + 1)]
    return refs, targets


def _end_to_end(weights: str, image_size: int, shots: int, names: list[str], repeats: int, cache: str,
                queue) -> None:
    """Median latency per target: the official-style call and each runtime's engine, interleaved per target."""
    import torch

    from core.engine import Insid3

    torch.set_num_threads(2)
    engines = {name: Insid3.build(model_size="small", weights=weights, image_size=image_size, device="cpu",
                                  basis_cache_dir=cache, runtime=name) for name in dict.fromkeys(["torch", *names])}
    refs, targets = _inputs(image_size, shots, repeats)
    calls = {"official": lambda target: _official_style(engines["torch"], refs, target)}
    for name in names:
        references = [engines[name].encode_reference(image, mask) for image, mask in refs]  # cached once
        calls[name] = lambda target, e=engines[name], r=references: e.segment(target, r)
    times: dict[str, list[float]] = {mode: [] for mode in calls}
    for index, target in enumerate(targets):
        for mode, call in calls.items():
            start = time.perf_counter()
            call(target)
            if index:  # the first target warms up
                times[mode].append(time.perf_counter() - start)
    queue.put({mode: statistics.median(values) for mode, values in times.items()})


def _memory(mode: str, weights: str, image_size: int, cache: str, queue) -> None:
    """Warm restart time (imports + build) and peak RSS of a process that builds one engine and segments 2 targets."""
    start = time.perf_counter()
    import torch

    from core.engine import Insid3

    torch.set_num_threads(2)
    engine = Insid3.build(model_size="small", weights=weights, image_size=image_size, device="cpu",
                          basis_cache_dir=cache, runtime="torch" if mode == "official" else mode)
    build_s = time.perf_counter() - start
    refs, targets = _inputs(image_size, 1, 1)
    for target in targets:
        if mode == "official":
            _official_style(engine, refs, target)
        else:
            engine.segment(target, [engine.encode_reference(*refs[0])])
    queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, build_s))


def _in_child(function, *args: object):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=function, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _export_of(cache: str, opset: int) -> Path:
    """The cached ONNX export of one opset."""
    import json

    for meta in Path(cache).glob("encoders/encoder-*.json"):
        if json.loads(meta.read_text())["made_from"]["opset"] == opset:
            return meta.with_suffix(".onnx")
    raise FileNotFoundError(f"no opset {opset} export in {cache}")


def _attention(name: str, cache: str) -> str:
    """What a runtime runs for attention: op counts of the graph after its own optimisations."""
    from collections import Counter

    from core.runtimes import OPSETS

    if name == "torch":
        return "F.scaled_dot_product_attention (fused kernel)"
    path = _export_of(cache, OPSETS[name])
    if name == "onnxruntime":
        import onnx
        import onnxruntime

        options = onnxruntime.SessionOptions()
        optimized = str(path.with_suffix(".optimized.onnx"))
        options.optimized_model_filepath = optimized
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ops = Counter(node.op_type for node in onnx.load(optimized).graph.node)
        Path(optimized).unlink()
        return f"opset 23 graph; after ORT optimisation: {ops['Attention']} Attention, {ops['Softmax']} Softmax, " \
               f"{ops['MatMul']} MatMul"
    import openvino

    core = openvino.Core()
    layers = Counter(op.get_rt_info()["layerType"].astype(str)
                     for op in core.compile_model(core.read_model(str(path)), "CPU").get_runtime_model().get_ops())
    fused = {k: v for k, v in layers.items() if k in ("ScaledDotProductAttention", "Subgraph", "MHA")}
    return f"opset 18 graph (MatMul+Softmax); CPU plugin runs: {fused or 'no fused attention'}, " \
           f"{layers['Softmax']} Softmax, {layers['MatMul']} MatMul"


def _encoders(weights: str, image_size: int, runtime_names: list[str], repeats: int, cache: str, queue) -> None:
    """The encoder alone per runtime, interleaved with torch eager; exports land in ``cache``."""
    import torch

    from core.engine import Insid3

    torch.set_num_threads(2)
    engines = {}
    for name in ["torch", *runtime_names]:
        start = time.perf_counter()
        engines[name] = Insid3.build(model_size="small", weights=weights, image_size=image_size, device="cpu",
                                     basis_cache_dir=cache, runtime=name)
        print(f"  built {name} at {image_size} in {time.perf_counter() - start:.1f} s (cold caches)",
              flush=True)
    images = torch.randn(1, 3, image_size, image_size)
    reference = engines["torch"].encode_tensor(images)
    max_abs = {name: float((engine.encode_tensor(images) - reference).abs().max()) for name, engine in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.encode_tensor(images)
            times[name].append(time.perf_counter() - start)
    queue.put({name: (statistics.median(times[name]), max_abs[name], _attention(name, cache)) for name in engines})


def _masks(weights: str, image_size: int, runtime_names: list[str], count: int, cache: str, queue) -> None:
    """Masks of each runtime against torch's on ``count`` random 1-shot scenes."""
    import torch

    from core.engine import Insid3

    torch.set_num_threads(2)
    engines = {name: Insid3.build(model_size="small", weights=weights, image_size=image_size, device="cpu",
                                  basis_cache_dir=cache, runtime=name) for name in ["torch", *runtime_names]}
    report: dict[str, list[tuple[int, float]]] = {name: [] for name in runtime_names}
    for seed in range(count):
        rng = np.random.default_rng(seed)
        image, mask = _scene(seed % 8, size=int(rng.integers(320, 800)))  # seeds 0..7 keep the disc in view
        target = np.clip(np.roll(image, int(rng.integers(-80, 80)), axis=1).astype(int)
                         + rng.integers(-30, 30, image.shape), 0, 255).astype(np.uint8)
        expected = engines["torch"].segment(target, [engines["torch"].encode_reference(image, mask)]).mask
        expected_features = engines["torch"].encode_images([target])[0].features
        for name in runtime_names:
            engine = engines[name]
            actual = engine.segment(target, [engine.encode_reference(image, mask)]).mask
            features = engine.encode_images([target])[0].features
            report[name].append((int((actual != expected).sum()), float((features - expected_features).abs().max())))
    queue.put(report)


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
    """One batched torch encoder call versus a loop of single-image calls (decides encoder_batch_size).

    OpenVINO needs no such choice: the engine compiles it for one image.
    """
    import torch

    from core.engine import Insid3

    engine = Insid3.build(model_size="small", weights=weights, image_size=image_size, device="cpu",
                          basis_cache_dir=tempfile.mkdtemp(), runtime="torch")
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
    print(f"torch encoder, {count} images at {image_size}: loop {loop_s * 1000:.0f} ms, "
          f"one batch {batched_s * 1000:.0f} ms, batch/loop {batched_s / loop_s:.2f} "
          "(CPU default: loop, encoder_batch_size=1)")


def main() -> None:
    from core.runtimes import RUNTIMES, runtime_version

    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", nargs="+", choices=RUNTIMES, default=None,
                        help="engine runtimes to measure (default: torch and every installed one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mask-scenes", type=int, default=50, help="random scenes for the mask comparison (0: skip)")
    parser.add_argument("--mask-size", type=int, default=512)
    args = parser.parse_args()
    names = args.runtime or [name for name in RUNTIMES if runtime_version(name)]
    exported = [name for name in names if name != "torch"]

    from core.checkpoint import make_checkpoint

    weights = str(make_checkpoint("small", Path(tempfile.mkdtemp()) / "vits16_random.pth", seed=0))
    cache = tempfile.mkdtemp()
    print("ViT-S/16 (random weights), CPU, 2 threads; runtimes: "
          + ", ".join(f"{name} {runtime_version(name)}" for name in ["torch", *exported]))
    print("\nencoder alone, 1 image, median of interleaved calls; features: max-abs vs torch (L2-normalised)")
    for size in args.sizes:
        results = _in_child(_encoders, weights, size, exported, max(args.repeats, 5), cache)
        torch_s = results["torch"][0]
        for name, (seconds, max_abs, attention) in results.items():
            print(f"{size:>5} {name:>12} {seconds * 1000:>7.0f} ms {torch_s / seconds:>5.2f}x  max-abs {max_abs:.1e}  "
                  f"attention: {attention}", flush=True)
    print("\nend to end, median latency per target, all interleaved in one process; the engines start warm")
    print(f"{'size':>5} {'shots':>5} {'official-style':>15}" + "".join(f"{name:>24}" for name in names))
    for size in args.sizes:
        for shots in args.shots:
            medians = _in_child(_end_to_end, weights, size, shots, names, args.repeats, cache)
            print(f"{size:>5} {shots:>5} {medians['official'] * 1000:>12.0f} ms" + "".join(
                f"{medians[name] * 1000:>12.0f} ms {medians['official'] / medians[name]:>6.2f}x" for name in names),
                flush=True)
    print("\npeak RSS of a process that builds one engine (warm caches) and segments 2 targets; "
          "warm restart: its imports + build")
    for size in args.sizes:
        rows = {mode: _in_child(_memory, mode, weights, size, cache) for mode in ["official", *names]}
        base = rows["torch"][0] if "torch" in rows else float("nan")
        print(f"{size:>5} " + "  ".join(f"{mode} {rss:.0f} MB ({rss / base - 1:+.0%} vs torch, restart {build_s:.2f} s)"
                                         for mode, (rss, build_s) in rows.items()), flush=True)
    if args.mask_scenes and exported:
        report = _in_child(_masks, weights, args.mask_size, exported, args.mask_scenes, cache)
        for name, rows in report.items():
            differing = [pixels for pixels, _ in rows if pixels]
            print(f"\nmasks at {args.mask_size}, {name} vs torch: {len(rows) - len(differing)}/{len(rows)} identical"
                  + (f"; differing scenes: {len(differing)}, at most {max(differing)} pixels" if differing else "")
                  + f"; target features max-abs {max(diff for _, diff in rows):.1e}")
    _clustering(weights)
    _batching(weights)


if __name__ == "__main__":
    main()
