"""Benchmark: end-to-end latency of a 1-shot ``POST /segment`` (cached reference) versus calling
the engine directly in this process, for the same inputs and settings.

Both sides run in this process with the same random checkpoint (real weights cannot be downloaded
here), image size and device. The API side is ``create_app(Settings(...))`` (embedded mode, default
batching settings) under uvicorn in a thread, called sequentially over real HTTP on localhost with
a 640x480 PNG target and the default ``format=rle``; the direct side is
``engine.segment(png_bytes, [reference])`` on its own engine (decode, encode, pipeline and
upsampling included). Calls alternate between the two so that drift affects both; the overhead is
the median of the per-round differences (also shown: min vs min, median vs median; on a busy
machine the spread between them shows how much noise there is).

    .venv/bin/python bench/bench_api.py [--model-size small] [--image-size 512] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from scenes import disc_scene, free_port


class _ServerThread:
    """``create_app(settings)`` under uvicorn in a thread of this process."""

    def __init__(self, settings) -> None:
        import uvicorn

        from app.main import create_app

        self.url = f"http://127.0.0.1:{settings.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the API did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def _summary(name: str, samples_ms: list[float]) -> str:
    ordered = sorted(samples_ms)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (f"{name:<28} median {statistics.median(ordered):8.1f} ms   mean {statistics.fmean(ordered):8.1f} ms"
            f"   p90 {p90:8.1f} ms   min {ordered[0]:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", default="small")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    from app.settings import Settings
    from core.checkpoint import make_checkpoint
    from core.engine import Insid3

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        weights = workdir / f"random_{args.model_size}.pth"
        make_checkpoint(args.model_size, weights, seed=0)
        reference, mask = disc_scene(1, 480, 640)
        target, _ = disc_scene(2, 480, 640)

        settings = Settings(model_size=args.model_size, weights=str(weights), image_size=args.image_size,
                            device=args.device, basis_cache_dir=workdir / "basis", port=free_port())
        engine = Insid3.build(settings)
        features = engine.encode_reference(reference, mask)
        with _ServerThread(settings) as url, httpx.Client(base_url=url, timeout=300) as client:
            created = client.post("/references", files={"image": reference, "mask": mask})
            created.raise_for_status()
            reference_id = created.json()["reference_id"]

            def api() -> None:
                response = client.post("/segment", files={"target": ("target.png", target, "image/png")},
                                       data={"reference_ids": reference_id})
                response.raise_for_status()

            def direct() -> None:
                engine.segment(target, [features])

            timings: dict[str, list[float]] = {"direct": [], "api": []}
            for round_index in range(args.warmup + args.repeats):
                for name, call in (("direct", direct), ("api", api)):
                    start = time.perf_counter()
                    call()
                    if round_index >= args.warmup:
                        timings[name].append((time.perf_counter() - start) * 1000.0)

    direct, api = timings["direct"], timings["api"]
    print(f"1-shot POST /segment vs engine.segment: {args.model_size} at {args.image_size}, {args.device}, "
          f"random checkpoint, 640x480 PNG target, {args.repeats} calls each (after {args.warmup} warm-up)")
    print(_summary("engine.segment (direct)", direct))
    print(_summary("POST /segment (HTTP, rle)", api))
    paired = statistics.median(a - d for a, d in zip(api, direct, strict=True))
    for label, extra, base in (
        ("median of paired differences", paired, statistics.median(direct)),
        ("min vs min", min(api) - min(direct), min(direct)),
        ("median vs median", statistics.median(api) - statistics.median(direct), statistics.median(direct)),
    ):
        print(f"overhead, {label:<29} {extra:+8.1f} ms = {100.0 * extra / base:+5.1f} %   (target <= 10 %)")


if __name__ == "__main__":
    main()
