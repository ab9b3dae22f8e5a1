"""Benchmark: every encoder runtime x precision x image size against the machine's GEMM roof, with mask fidelity.

For each image size, one process builds an engine per (runtime, precision) (torch fp32 and bf16
autocast, ONNX Runtime fp32, OpenVINO fp32 and bf16, and ``auto``) on a random ViT-S/16 and
prints: the encoder's median ms per image (configurations interleaved call by call, so a shared
machine's load falls on all alike), its GFLOP/s (the ViT's FLOPs counted analytically from the
spec), the GEMM roof of this machine in fp32 and bf16 (torch matmul of large matrices, measured
in the same run, before and after the encoders: the best is kept) and the encoder's share of it,
and its 1-shot masks against torch fp32's over fixed scenes (bench/scenes.py): mean and min IoU,
identical count. Also which runtime ``auto`` measured and picked, against the fastest installed.

    .venv/bin/python bench/bench_runtimes.py [--sizes 512 1024] [--runs 3] [--scenes 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scenes import disc_scene

from core import runtime_choice
from core.engine import Insid3
from core.runtimes import RUNTIMES, runtime_version
from core.specs import N_STORAGE_TOKENS, PATCH_SIZE, BackboneSpec, get_spec

CONFIGS = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
           ("openvino", "bf16"), ("auto", "fp32")]
GEMM_SIZE = 2048


def vit_flops(spec: BackboneSpec, image_size: int) -> float:
    """FLOPs of one image through the ViT (2 per multiply-add): patch embedding, then per block the
    qkv, output and MLP (hidden 4·D) projections and the two attention products over N tokens."""
    if spec.ffn != "mlp":
        raise ValueError(f"only the plain-MLP ViTs are counted here, not {spec.size} ({spec.ffn})")
    patches = (image_size // PATCH_SIZE) ** 2
    tokens, dim = patches + 1 + N_STORAGE_TOKENS, spec.embed_dim
    embedding = 2 * patches * 3 * PATCH_SIZE**2 * dim
    block = 2 * tokens * (3 * dim * dim + dim * dim + 2 * 4 * dim * dim) + 2 * 2 * tokens * tokens * dim
    return embedding + spec.depth * block


def gemm_roof(dtype: torch.dtype, runs: int = 5) -> float:
    """GFLOP/s of the best of ``runs`` torch matmuls of two GEMM_SIZE² matrices of ``dtype``."""
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE).to(dtype), torch.randn(GEMM_SIZE, GEMM_SIZE).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * GEMM_SIZE**3 / best / 1e9


def scenes(count: int) -> list[tuple[bytes, bytes, bytes]]:
    """(reference PNG, its mask PNG, target PNG): a red disc on noise, the target another such scene."""
    out = []
    for seed in range(count):
        image, mask = disc_scene(seed, 480, 640)
        target, _ = disc_scene(seed + 100, 480, 640)
        out.append((image, mask, target))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def build(label: tuple[str, str], weights: str, size: int, cache: str) -> Insid3:
    runtime, precision = label
    return Insid3.build(model_size="small", weights=weights, image_size=size, device="cpu",
                        basis_cache_dir=cache, runtime=runtime, precision=precision)


def run_size(size: int, weights: str, cache: str, runs: int, scene_count: int,
             configs: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """Every configuration at ``size``: encoder times interleaved, masks against torch fp32 (printed as they come)."""
    installed = [c for c in configs if c[0] in ("torch", "auto") or runtime_version(c[0])]
    engines = {label: build(label, weights, size, cache) for label in installed}
    images = torch.randn(1, 3, size, size)
    times: dict[tuple[str, str], list[float]] = {label: [] for label in engines}
    for engine in engines.values():
        engine.encode_tensor(images)  # warm-up
    for _ in range(runs):
        for label, engine in engines.items():
            start = time.perf_counter()
            engine.encode_tensor(images)
            times[label].append(time.perf_counter() - start)
    print(f"{size}: encoder ms " + ", ".join(f"{'/'.join(label)} {statistics.median(t) * 1000:.0f}"
                                            for label, t in times.items()), flush=True)
    ious: dict[tuple[str, str], list[float]] = {label: [] for label in engines}
    identical = dict.fromkeys(engines, 0)
    for image, mask, target in scenes(scene_count):
        masks = {label: engine.segment(target, [engine.encode_reference(image, mask)]).mask
                 for label, engine in engines.items()}
        for label, actual in masks.items():
            ious[label].append(_iou(actual, masks["torch", "fp32"]))
            identical[label] += bool(np.array_equal(actual, masks["torch", "fp32"]))
        print(f"{size}: scene {len(ious['torch', 'fp32'])} IoU " + ", ".join(
            f"{'/'.join(label)} {values[-1]:.4f}" for label, values in ious.items()), flush=True)
    return {label: {"ms": statistics.median(times[label]) * 1000, "ious": ious[label], "identical": identical[label],
                    "runtime": engine.runtime}
            for label, engine in engines.items()}


def print_size(size: int, results: dict, roofs: dict[str, float], spec: BackboneSpec) -> None:
    flops = vit_flops(spec, size)
    print(f"\n### {size}: {flops / 1e9:.1f} GFLOP per image; GEMM roof fp32 {roofs['fp32']:.0f}, "
          f"bf16 {roofs['bf16']:.0f} GFLOP/s\n")
    print("| runtime | precision | encoder ms | vs its fp32 | GFLOP/s | share of roof | mask IoU mean / min "
          "| identical |")
    print("|---|---|---|---|---|---|---|---|")
    for (runtime, _), row in results.items():
        chosen = row["runtime"]
        name = f"auto → {chosen.name}" if runtime == "auto" else runtime
        own_fp32 = results.get((runtime, "fp32")) if runtime != "auto" else None
        speedup = f"{own_fp32['ms'] / row['ms']:.2f}×" if own_fp32 else "–"
        gflops = flops / row["ms"] / 1e6
        roof = roofs["bf16" if chosen.precision == "bf16" else "fp32"]
        print(f"| {name} | {chosen.precision} | {row['ms']:.0f} | {speedup} | {gflops:.0f} | {gflops / roof:.0%} "
              f"| {statistics.fmean(row['ious']):.4f} / {min(row['ious']):.4f} "
              f"| {row['identical']}/{len(row['ious'])} |", flush=True)


def print_auto(results: dict) -> None:
    """``auto``'s pick against the fastest exact fp32 runtime, as timed in this run."""
    auto = results.get(("auto", "fp32"))
    if auto is None:
        return
    exact = {label: row for label, row in results.items() if label[1] == "fp32" and label[0] != "auto"}
    fastest = min(exact, key=lambda label: exact[label]["ms"])
    picked = exact.get((auto["runtime"].name, "fp32"), auto)
    print(f"\nauto picked {auto['runtime'].name} ({auto['ms']:.0f} ms in this run); fastest fp32 runtime here: "
          f"{fastest[0]} ({exact[fastest]['ms']:.0f} ms): auto's engine at {auto['ms'] / exact[fastest]['ms']:.2f}× "
          f"its time, the picked runtime's own engine at "
          f"{picked['ms'] / exact[fastest]['ms']:.2f}×; "
          f"auto's masks identical to torch fp32 in {auto['identical']}/{len(auto['ious'])} scenes")
    if auto["runtime"].report is not None:
        for m in auto["runtime"].report.measurements:
            print(f"  auto measured {m.label}: {m.ms:.0f} ms, {'exact' if m.exact else 'approximate'}"
                  if m.error is None else f"  auto measured {m.label}: {m.error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--runs", type=int, default=3, help="timed encoder calls per configuration and size")
    parser.add_argument("--scenes", type=int, default=12, help="1-shot scenes for the mask comparison")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=[":".join(c) for c in CONFIGS],
                        help="runtime:precision pairs (torch:fp32, the reference, is always run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from core.checkpoint import make_checkpoint

    spec = get_spec("small")
    weights = str(make_checkpoint("small", Path(tempfile.mkdtemp()) / "vits16_random.pth", seed=0))
    flags = runtime_choice.cpu_flags()
    print(f"CPU: {runtime_choice.cpu_model()}; native bf16: "
          f"{runtime_choice.missing_native_bf16(flags) or ', '.join(sorted(set(flags) & {'avx512_bf16', 'amx_bf16'}))}"
          f"; {args.threads} threads; ViT-S/16 random weights; "
          + ", ".join(f"{name} {runtime_version(name)}" for name in RUNTIMES if runtime_version(name)))
    for size in args.sizes:
        cache = tempfile.mkdtemp()  # cold: auto measures in this run
        roofs = {"fp32": gemm_roof(torch.float32), "bf16": gemm_roof(torch.bfloat16)}
        configs = [("torch", "fp32"), *(tuple(c.split(":")) for c in args.configs if c != "torch:fp32")]
        results = run_size(size, weights, cache, args.runs, args.scenes, configs)
        roofs = {"fp32": max(roofs["fp32"], gemm_roof(torch.float32)),
                 "bf16": max(roofs["bf16"], gemm_roof(torch.bfloat16))}
        print_size(size, results, roofs, spec)
        print_auto(results)


if __name__ == "__main__":
    main()
