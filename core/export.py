"""``insid3 export --format onnx``: the encoder as ONNX plus its positional basis, as a Triton model repository.

```
OUT/insid3_encoder/config.pbtxt     Triton: onnxruntime_onnx, dynamic batch up to --max-batch
OUT/insid3_encoder/1/model.onnx     input "pixels" (B, 3, S, S) ImageNet-normalised -> "features" (B, C, S/16, S/16)
OUT/positional_basis.npy            (C, k) float32: debias = normalise, project off, re-normalise
OUT/insid3_export.json              what produced it and how to use it
```
The basis is computed through ONNX Runtime on the exported model when it is installed (the
runtime that serves the features), else through torch. docs/triton.md shows how to serve it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.errors import ConfigurationError
from core.settings import EngineSettings
from core.specs import PATCH_SIZE, get_spec, resolve_svd_components

OPSETS = (18, 23)  # TensorRT-friendly; the first with a fused Attention op (core.runtimes.DEFAULT_OPSET)

MODEL_NAME = "insid3_encoder"


def triton_config(channels: int, image_size: int, max_batch: int) -> str:
    """A Triton ``config.pbtxt`` for the exported encoder."""
    grid = image_size // PATCH_SIZE
    return (
        f'name: "{MODEL_NAME}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
        f'input [ {{ name: "pixels" data_type: TYPE_FP32 dims: [ 3, {image_size}, {image_size} ] }} ]\n'
        f'output [ {{ name: "features" data_type: TYPE_FP32 dims: [ {channels}, {grid}, {grid} ] }} ]\n'
        "dynamic_batching { }\n"
    )


def export(model_size: str, weights: str | None, image_size: int, out: Path, svd_components: int | None = None,
           opset: int = 18, max_batch: int = 8, weights_tag: str = "lvd1689m",
           pretrain_dir: Path = Path("pretrain")) -> dict[str, object]:
    """Write the encoder, its basis and a Triton config under ``out``; returns the manifest."""
    import numpy as np
    import torch

    from core.artifacts import make_atomic
    from core.backbone import load_backbone
    from core.debias import constant_probe, positional_basis
    from core.images import IMAGENET_MEAN, IMAGENET_STD
    from core.runtimes import FeatureEncoder, export_onnx, load_session, runtime_version

    spec = get_spec(model_size)
    components = resolve_svd_components(spec, svd_components)
    if image_size < PATCH_SIZE or image_size % PATCH_SIZE:
        raise ConfigurationError(f"image_size must be a positive multiple of {PATCH_SIZE}, got {image_size}")
    backbone = load_backbone(spec, weights, weights_tag, pretrain_dir)
    model_dir = out / MODEL_NAME
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    onnx_path = model_dir / "1" / "model.onnx"
    make_atomic(onnx_path, lambda scratch: export_onnx(backbone.model, scratch, image_size, opset=opset))
    probe = constant_probe(image_size)
    with torch.no_grad():
        reference = FeatureEncoder(backbone.model)(probe)
    basis_runtime = "onnxruntime" if runtime_version("onnxruntime") else "torch"
    features = load_session(basis_runtime, str(onnx_path), torch.get_num_threads())(probe) \
        if basis_runtime != "torch" else reference
    basis = positional_basis(features[0], components)
    np.save(out / "positional_basis.npy", basis.numpy().astype(np.float32))
    (model_dir / "config.pbtxt").write_text(triton_config(spec.embed_dim, image_size, max_batch))
    manifest: dict[str, object] = {
        "model_id": backbone.model_id, "model_size": model_size, "image_size": image_size, "opset": opset,
        "svd_components": components, "basis_runtime": basis_runtime,
        "probe_max_abs_vs_torch": float((features - reference).abs().max()),
        "input": {"name": "pixels", "shape": ["batch", 3, image_size, image_size], "dtype": "float32",
                  "preprocess": "RGB resized to image_size², /255, minus mean, over std",
                  "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "output": {"name": "features", "shape": ["batch", spec.embed_dim, image_size // PATCH_SIZE,
                                                 image_size // PATCH_SIZE], "dtype": "float32"},
        "model": str(onnx_path.relative_to(out)), "positional_basis": "positional_basis.npy",
    }
    (out / "insid3_export.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _export(args: argparse.Namespace) -> int:
    settings = EngineSettings.from_args(args)
    manifest = export(settings.model_size, settings.weights, settings.image_size, args.out, settings.svd_components,
                      args.opset, args.max_batch, settings.weights_tag, settings.pretrain_dir)
    print(f"wrote {args.out / str(manifest['model'])} (opset {args.opset}, dynamic batch) and "
          f"{args.out / 'positional_basis.npy'} (basis through {manifest['basis_runtime']}, probe max-abs "
          f"{manifest['probe_max_abs_vs_torch']:.2g} vs torch); Triton: docs/triton.md")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``insid3 export``."""
    parser = subparsers.add_parser("export", help="export the encoder (ONNX) and its positional basis for Triton")
    parser.add_argument("--format", default="onnx", choices=("onnx",))
    EngineSettings.add_arguments(
        parser, ("model_size", "weights", "weights_tag", "pretrain_dir", "image_size", "svd_components"))
    parser.add_argument("--opset", type=int, default=18, choices=OPSETS,
                        help="18: attention as MatMul+Softmax, for TensorRT and older runtimes (default); "
                             "23: one fused Attention op (ONNX Runtime >= 1.23)")
    parser.add_argument("--max-batch", type=int, default=8, help="Triton max_batch_size")
    parser.add_argument("--out", type=Path, required=True)
    parser.set_defaults(handler=_export)
