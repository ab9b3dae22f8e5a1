"""One-shot GPU check: parity, bf16 masks, the CUDA clustering kernel, throughput, the service, memory.

Prints a JSON report and a markdown summary; exits 1 when a check fails. On one GPU it takes
under 8 minutes (random ViT-L/16 weights: real ones are gated). ``--device cpu --quick`` runs
every section on a tiny model in seconds: the test suite runs it so the script cannot rot.

    .venv/bin/python bench/gpu_check.py [--device cuda] [--quick] [--out report.json]

Sections: backbone parity on tests/parity, this device fp32 vs CPU fp32 (<= 1e-4); bf16 vs fp32
masks on random scenes (mean IoU, fraction identical); the device clustering kernel vs the CPU
nearest-neighbour chain (identical partitions); encoder throughput per batch size; end-to-end
1-shot targets/s with a cached reference; ``insid3 serve`` under concurrent clients (req/s,
p50/p99); peak device memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "bench")]

from scenes import disc_scene, free_port, wait_ready  # noqa: E402

from core import clustering  # noqa: E402
from core.checkpoint import make_checkpoint  # noqa: E402
from core.engine import Insid3  # noqa: E402
from core.images import pixels_to_tensor, resize_square  # noqa: E402
from core.parity import BACKBONE_TOLERANCE, _backbone_model, same_partition  # noqa: E402


@dataclass(frozen=True)
class Plan:
    """How big each section is."""

    parity_inputs: tuple[str, ...]  # inputs of tests/parity/backbone/inputs.npz
    model_size: str
    image_size: int
    mask_model: str
    mask_size: int
    scenes: int
    cluster_sizes: tuple[int, ...]  # image sizes: N = (size / 16)^2 patches
    batches: tuple[int, ...]
    repeats: int  # encoder passes timed per batch size
    targets: int
    clients: int
    seconds: float


FULL = Plan(("x224", "x320x256", "xconst512"), "large", 1024, "large", 512, 50, (512, 1024), (1, 4, 8),
            5, 32, 16, 30.0)
QUICK = Plan(("x224",), "tiny", 128, "tiny", 128, 2, (128, 256), (1, 2), 1, 2, 2, 1.0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def last_layer(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_intermediates(x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True)[0]


def backbone_parity(device: torch.device, parity_dir: Path, names: tuple[str, ...]) -> dict[str, object]:
    """Last-layer features of the shrunk parity backbones on ``device`` vs the CPU and the official golden data."""
    folder = parity_dir / "backbone"
    inputs = np.load(folder / "inputs.npz")
    worst_cpu = worst_golden = 0.0
    for config in ("vits16", "vits16plus"):
        expected = np.load(folder / f"expected_{config}.npz")
        model = _backbone_model(folder, config)
        for name in names:
            x = torch.from_numpy(inputs[name])
            cpu = last_layer(model, x)
            on_device = last_layer(model.to(device), x.to(device)).cpu()
            model.cpu()
            worst_cpu = max(worst_cpu, float((on_device - cpu).abs().max()))
            worst_golden = max(worst_golden, float(np.abs(on_device.numpy() - expected[f"{name}__n1"]).max()))
    return {"max_abs_vs_cpu": worst_cpu, "max_abs_vs_official": worst_golden,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32, "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "ok": max(worst_cpu, worst_golden) <= BACKBONE_TOLERANCE}


def scene(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference, mask, target): a coloured disc on noise, moved and re-noised in the target."""
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(240, 480)), int(rng.integers(240, 480))
    image = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    rows, cols = np.mgrid[:height, :width]
    radius = int(rng.integers(height // 8, height // 4))
    mask = (rows - height // 2) ** 2 + (cols - width // 3) ** 2 < radius**2
    image[mask] = rng.integers(120, 255, 3)
    target = np.clip(np.roll(image, width // 4, axis=1) + rng.integers(0, 40, image.shape), 0, 255)
    return image, mask, target.astype(np.uint8)


def bf16_masks(engines: dict[str, Insid3], count: int) -> dict[str, object]:
    """bf16-autocast masks against fp32 masks on ``count`` scenes."""
    ious, identical = [], 0
    for seed in range(count):
        image, mask, target = scene(seed)
        masks = {name: engine.segment(target, [engine.encode_reference(image, mask)]).mask
                 for name, engine in engines.items()}
        union = np.logical_or(masks["fp32"], masks["bf16"]).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(masks["fp32"], masks["bf16"]).sum() / union))
        identical += bool(np.array_equal(masks["fp32"], masks["bf16"]))
    return {"scenes": count, "mean_iou": statistics.fmean(ious), "min_iou": min(ious),
            "fraction_identical": identical / count}


def clustering_kernel(engine: Insid3, device: torch.device, sizes: tuple[int, ...]) -> dict[str, object]:
    """The device's parallel merging kernel vs the CPU chain on real encoder features."""
    rows = []
    image = scene(0)[0]
    for size in sizes:
        batch = pixels_to_tensor(resize_square(Image.fromarray(image), size))[None]
        features = engine.torch_features(batch.to(device)).float()
        flat = torch.nn.functional.normalize(features[0].reshape(features.shape[1], -1).T, dim=1).contiguous()
        start = time.perf_counter()
        chain = clustering.cluster_patches(flat.cpu(), engine.options.tau)
        chain_s = time.perf_counter() - start
        sync(device)
        start = time.perf_counter()
        kernel = clustering._round_labels(clustering._cosine_distances(flat.to(device)), 1.0 - engine.options.tau)
        sync(device)
        kernel_s = time.perf_counter() - start
        rows.append({"n": flat.shape[0], "clusters": int(chain.max()) + 1, "cpu_chain_ms": chain_s * 1000,
                     "device_kernel_ms": kernel_s * 1000,
                     "identical": same_partition(chain.numpy(), kernel.cpu().numpy())})
    return {"rows": rows, "ok": all(row["identical"] for row in rows)}


def throughput(engine: Insid3, plan: Plan) -> dict[str, object]:
    """Encoder images/s per batch size, and end-to-end 1-shot targets/s with a cached reference."""
    size = engine.image_size
    encoder = {}
    for batch in plan.batches:
        images = torch.randn(batch, 3, size, size)
        engine.encode_tensor(images)  # warm-up (kernels, autotuning)
        start = time.perf_counter()
        for _ in range(plan.repeats):
            engine.encode_tensor(images)
        encoder[batch] = batch * plan.repeats / (time.perf_counter() - start)
    image, mask, target = scene(1)
    reference = engine.encode_reference(image, mask)
    shots = [np.roll(target, 8 * i, axis=1) for i in range(plan.targets)]
    engine.segment_batch(shots[:2], [reference])
    start = time.perf_counter()
    engine.segment_batch(shots, [reference])
    return {"image_size": size, "encoder_images_per_s": encoder,
            "end_to_end_targets_per_s": plan.targets / (time.perf_counter() - start)}


def serve(weights: Path, plan: Plan, device: str) -> dict[str, object]:
    """``insid3 serve`` on the device under ``plan.clients`` closed-loop clients."""

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INSID3_BASIS_CACHE_DIR": tempfile.mkdtemp(), "INSID3_MAX_QUEUE": "256",
           "INSID3_RUNTIME": "torch"}  # what auto picks on CUDA; on the CPU it skips the export
    command = [sys.executable, "-m", "insid3", "serve", "--model-size", plan.model_size, "--weights", str(weights),
               "--image-size", str(plan.image_size), "--device", device, "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            if not wait_ready(url, server) and server.poll() is None:
                raise TimeoutError("the service did not become ready in 300 s")
            if server.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"insid3 serve exited: {log.read().decode()[-2000:]}")
            return _load(url, plan)
        finally:
            server.terminate()
            server.wait(timeout=60)


def _load(url: str, plan: Plan) -> dict[str, object]:
    import httpx

    image, mask = disc_scene(0, 360, 480)
    target = disc_scene(1, 360, 480)[0]
    reference_id = httpx.post(f"{url}/references", files={"image": image, "mask": mask},
                              timeout=300).json()["reference_id"]
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + plan.seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while time.monotonic() < stop:
                start = time.perf_counter()
                response = http.post("/segment", files={"target": ("t.png", target, "image/png")},
                                     data={"reference_ids": reference_id})
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(plan.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    gpu_bytes = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("insid3_gpu_memory_bytes")]
    ordered = sorted(latencies) or [float("nan")]
    return {"clients": plan.clients, "requests": len(latencies), "errors": errors[0],
            "requests_per_s": len(latencies) / elapsed,
            "p50_ms": ordered[len(ordered) // 2] * 1000, "p99_ms": ordered[min(len(ordered) - 1,
                                                                              int(len(ordered) * 0.99))] * 1000,
            "service_gpu_memory_bytes": max(gpu_bytes, default=None), "ok": errors[0] == 0 and bool(latencies)}


def markdown(report: dict[str, object]) -> str:
    """A short markdown summary of the report."""
    parity, masks, cluster = report["backbone_parity"], report["bf16_masks"], report["clustering"]
    speed, service = report["throughput"], report["serve"]
    lines = [f"## GPU check: {report['device_name']} ({report['plan']})", "",
             "| check | result | ok |", "|---|---|---|",
             f"| backbone fp32 vs CPU / official | {parity['max_abs_vs_cpu']:.1e} / "
             f"{parity['max_abs_vs_official']:.1e} | {parity['ok']} |",
             f"| bf16 vs fp32 masks ({masks['scenes']} scenes) | mean IoU {masks['mean_iou']:.4f}, identical "
             f"{masks['fraction_identical']:.0%} | - |"]
    lines += [f"| clustering N={row['n']} | kernel {row['device_kernel_ms']:.1f} ms, chain "
              f"{row['cpu_chain_ms']:.1f} ms | {row['identical']} |" for row in cluster["rows"]]
    lines += [f"| encoder batch {batch} @{speed['image_size']} | {rate:.2f} images/s | - |"
              for batch, rate in speed["encoder_images_per_s"].items()]
    lines += [f"| end-to-end 1-shot, cached reference | {speed['end_to_end_targets_per_s']:.2f} targets/s | - |",
              f"| serve, {service['clients']} clients | {service['requests_per_s']:.2f} req/s, p50 "
              f"{service['p50_ms']:.0f} ms, p99 {service['p99_ms']:.0f} ms, {service['errors']} errors "
              f"| {service['ok']} |",
              f"| peak memory | {report['peak_memory_mb']:.0f} MB ({report['peak_memory_kind']}) | - |",
              f"| total | {report['seconds']:.0f} s | {report['ok']} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="a tiny model and a few scenes (seconds on a CPU)")
    parser.add_argument("--parity-dir", type=Path, default=REPO_ROOT / "tests" / "parity")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    device = torch.device(args.device)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp())
    weights = make_checkpoint(plan.model_size, work / f"{plan.model_size}.pth")
    mask_weights = weights if plan.mask_model == plan.model_size else make_checkpoint(plan.mask_model,
                                                                                      work / "mask.pth")

    def build(model: str, path: Path, size: int, precision: str) -> Insid3:
        return Insid3.build(model_size=model, weights=path, image_size=size, device=args.device, precision=precision,
                            basis_cache_dir=work / "cache", runtime="torch")

    report: dict[str, object] = {
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "plan": "quick" if args.quick else "full", "torch": torch.__version__, "section_seconds": {},
    }

    def section(name: str, function, *section_args: object) -> None:
        start = time.perf_counter()
        report[name] = function(*section_args)
        report["section_seconds"][name] = round(time.perf_counter() - start, 1)

    section("backbone_parity", backbone_parity, device, args.parity_dir, plan.parity_inputs)
    section("bf16_masks", lambda: bf16_masks({p: build(plan.mask_model, mask_weights, plan.mask_size, p)
                                              for p in ("fp32", "bf16")}, plan.scenes))
    engine = build(plan.model_size, weights, plan.image_size, "auto")
    section("clustering", clustering_kernel, engine, device, plan.cluster_sizes)
    section("throughput", throughput, engine, plan)
    del engine
    if device.type == "cuda":
        report["peak_memory_mb"], report["peak_memory_kind"] = torch.cuda.max_memory_allocated(device) / 2**20, "gpu"
        torch.cuda.empty_cache()
    else:
        report["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report["peak_memory_kind"] = "process RSS"
    section("serve", serve, weights, plan, args.device)
    report["seconds"] = time.perf_counter() - started
    report["ok"] = all(report[name]["ok"] for name in ("backbone_parity", "clustering", "serve"))
    text = json.dumps(report, indent=2, default=str)
    print(text)
    print()
    print(markdown(report))
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
