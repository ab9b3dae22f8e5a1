"""``python -m core.parity DIR``: check this project's code against the official golden data.

DIR holds case files in the format of shared/parity (its ``backbone/`` or ``insid3/`` folder, or
the parent of both). Prints ``NAME: ok`` or ``NAME: FAIL <what differs>`` per case and exits 1
if any case fails. Masks, votes and partitions must be identical; features within 1e-4 (backbone)
or 1e-5 (algorithm); keypoints within 0.5 px. ``--runtime onnxruntime|openvino`` computes the
features the engine uses (last layer, normed patch tokens) with that runtime on the exported
model; the other backbone outputs (cls, storage, last four layers, un-normed) exist only in torch.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from core.backbone import create_model, load_state_dict_into, read_state_dict
from core.debias import debias, normalize_channels, positional_basis
from core.pipeline import downsample_mask, match_keypoints, segment_grid, upsample_mask
from core.runtimes import export_onnx, load_session
from core.settings import CommandParser
from core.specs import SPECS

BACKBONE_TOLERANCE = 1e-4
FEATURE_TOLERANCE = 1e-5
KEYPOINT_TOLERANCE_PX = 0.5
GRID_TOLERANCE = 1e-4

Check = Callable[[], list[str]]


def _max_abs(a: np.ndarray | torch.Tensor, b: np.ndarray) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def _close(name: str, actual: np.ndarray | torch.Tensor, expected: np.ndarray, tolerance: float) -> list[str]:
    if tuple(actual.shape) != tuple(expected.shape):
        return [f"{name} shape {tuple(actual.shape)} != {tuple(expected.shape)}"]
    diff = _max_abs(actual, expected)
    return [] if diff <= tolerance else [f"{name} max abs diff {diff:.3g} > {tolerance:g}"]


def _equal(name: str, actual: np.ndarray | torch.Tensor, expected: np.ndarray) -> list[str]:
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    if actual.shape != expected.shape:
        return [f"{name} shape {actual.shape} != {expected.shape}"]
    wrong = int((actual != expected).sum())
    return [] if wrong == 0 else [f"{name}: {wrong} of {expected.size} entries differ"]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings group the elements identically (numbering-free)."""
    a, b = a.reshape(-1), b.reshape(-1)
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# ---------------------------------------------------------------------------------------- insid3


def _segmentation_case(data: np.lib.npyio.NpzFile) -> list[str]:
    image_size = int(data["image_size"])
    basis = positional_basis(torch.from_numpy(data["noise_feats"]), int(data["svd_components"]))
    refs = normalize_channels(torch.from_numpy(data["ref_feats"]))
    target = normalize_channels(torch.from_numpy(data["tgt_feats"]))
    refs_debiased = debias(refs, basis)
    target_debiased = debias(target, basis)
    h, w = target.shape[-2:]
    masks = [downsample_mask(torch.from_numpy(m > 0), h, w) for m in data["ref_masks"]]
    trace = segment_grid(target, target_debiased, list(refs_debiased), masks,
                         float(data["tau"]), float(data["merge_threshold"]))
    errors = _close("pos_projector", basis @ basis.T, data["pos_projector"], FEATURE_TOLERANCE)
    errors += _close("feats_debiased", torch.cat([refs_debiased, target_debiased[None]]),
                     data["feats_debiased"], FEATURE_TOLERANCE)
    errors += _equal("ref_masks_down", torch.stack(masks), data["ref_masks_down"])
    errors += _close("ref_prototype", trace.prototype, data["ref_prototype"], FEATURE_TOLERANCE)
    errors += _close("sim_fwd", trace.similarity, data["sim_fwd"], FEATURE_TOLERANCE)
    errors += _equal("forward_mask", trace.forward, data["forward_mask"])
    errors += _equal("votes", trace.votes, data["votes"])
    errors += _equal("candidate_mask", trace.candidates, data["candidate_mask"])
    reached = trace.aggregation is not None
    if reached != bool(data["reached_clustering"]):
        errors.append(f"reached_clustering {reached} != {bool(data['reached_clustering'])}")
    elif trace.aggregation is not None:
        agg = trace.aggregation
        if not same_partition(agg.labels.numpy(), data["cluster_labels"]):
            errors.append("cluster_labels: different partition")
        errors += _equal("seed_cluster_mask", agg.labels == agg.seed, data["seed_cluster_mask"])
        for name, values in (("area_weight_map", agg.area), ("cross_sim_map", agg.cross),
                             ("intra_sim_map", agg.intra), ("combined_map", agg.combined)):
            errors += _close(name, values[agg.labels], data[name], FEATURE_TOLERANCE)
    errors += _equal("pred_mask_feat", trace.mask, data["pred_mask_feat"])
    errors += _equal("pred_mask", upsample_mask(trace.mask, image_size, image_size), data["pred_mask"])
    return errors


def _keypoint_case(data: np.lib.npyio.NpzFile) -> list[str]:
    basis = positional_basis(torch.from_numpy(data["noise_feats"]), int(data["svd_components"]))
    ref = normalize_channels(torch.from_numpy(data["ref_feats"][0]))
    target = normalize_channels(torch.from_numpy(data["tgt_feats"]))
    keypoints = torch.from_numpy(data["ref_kps"])
    ref_size = tuple(int(v) for v in data["ref_orig_size"])
    target_size = tuple(int(v) for v in data["tgt_orig_size"])
    errors = _close("pos_projector", basis @ basis.T, data["pos_projector"], FEATURE_TOLERANCE)
    h, w = ref.shape[-2:]
    scaled = keypoints.clone()
    scaled[:, 0] *= w / ref_size[1]
    scaled[:, 1] *= h / ref_size[0]
    cells = scaled.round().long()
    src_xy = torch.stack([cells[:, 0].clamp(0, w - 1), cells[:, 1].clamp(0, h - 1)], dim=1)
    errors += _equal("src_xy", src_xy, data["src_xy"])
    for variant, (ref_map, target_map) in (
        ("debiased", (debias(ref, basis), debias(target, basis))), ("raw", (ref, target)),
    ):
        points, grid, _ = match_keypoints(ref_map, target_map, keypoints, ref_size, target_size)
        errors += _close(f"pred_grid_{variant}", grid, data[f"pred_grid_{variant}"], GRID_TOLERANCE)
        errors += _close(f"pred_kps_{variant}", points, data[f"pred_kps_{variant}"], KEYPOINT_TOLERANCE_PX)
    return errors


# -------------------------------------------------------------------------------------- backbone

_KEY = re.compile(r"^(?P<input>.+)__n(?P<n>\d+)(?P<what>_cls|_storage|_nonorm)?$")


def _backbone_model(folder: Path, config_name: str) -> torch.nn.Module:
    configs = json.loads((folder / "configs.json").read_text())
    kwargs = configs[config_name]["kwargs"]
    base = SPECS["small_plus" if kwargs["ffn_layer"].startswith("swiglu") else "small"]
    dims = {"embed_dim": kwargs["embed_dim"], "depth": kwargs["depth"], "num_heads": kwargs["num_heads"]}
    spec = dataclasses.replace(base, **dims, timm_kwargs=dims)
    checkpoint = folder / f"tiny_{config_name}.pth"
    model = create_model(spec)
    load_state_dict_into(model, spec, read_state_dict(checkpoint), str(checkpoint))
    return model.eval()


def _runtime_features(model: torch.nn.Module, runtime: str, x: torch.Tensor) -> torch.Tensor:
    """The engine's features of ``x`` through ``runtime`` on the model exported at x's size."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "encoder.onnx"
        export_onnx(model, path, x.shape[-2], x.shape[-1])
        return load_session(runtime, str(path), torch.get_num_threads())(x)


def _backbone_case(path: Path, runtime: str = "torch") -> list[str]:
    config_name = path.stem.removeprefix("expected_")
    model = _backbone_model(path.parent, config_name)
    inputs = np.load(path.parent / "inputs.npz")
    expected = np.load(path)
    errors: list[str] = []
    with torch.no_grad():
        for key in expected.files:
            match = _KEY.match(key)
            if match is None:
                continue
            x = torch.from_numpy(inputs[match["input"]])
            n, what = int(match["n"]), match["what"]
            if runtime != "torch" and n == 1 and what is None:
                errors += _close(f"{key} ({runtime})", _runtime_features(model, runtime, x), expected[key],
                                 BACKBONE_TOLERANCE)
                continue
            outputs = model.forward_intermediates(
                x, indices=n, norm=what != "_nonorm", output_fmt="NCHW",
                intermediates_only=True, return_prefix_tokens=True,
            )
            if what == "_cls":
                actual = torch.stack([prefix[:, 0] for _, prefix in outputs])
            elif what == "_storage":
                actual = torch.stack([prefix[:, 1:] for _, prefix in outputs])
            else:
                actual = torch.stack([spatial for spatial, _ in outputs])
            if n == 1:
                actual = actual[0]
            errors += _close(key, actual, expected[key], BACKBONE_TOLERANCE)
    return errors


# ----------------------------------------------------------------------------------------- runner


def discover_cases(directory: Path, runtime: str = "torch") -> Iterator[tuple[str, Check]]:
    """Every case file below ``directory`` with the check that runs it (backbone features via ``runtime``)."""
    for path in sorted(directory.rglob("*.npz")):
        if path.name.startswith("expected_"):
            yield f"{path.parent.name}/{path.stem}", lambda p=path: _backbone_case(p, runtime)
            continue
        if path.name == "inputs.npz":
            continue
        with np.load(path) as data:
            files = set(data.files)
        if "ref_masks" in files:
            yield path.stem, lambda p=path: _segmentation_case(np.load(p))
        elif "ref_kps" in files:
            yield path.stem, lambda p=path: _keypoint_case(np.load(p))


def run(directory: Path, runtime: str = "torch") -> int:
    """Run every case, print one line per case, return the number of failures (or -1 if none found)."""
    failures = 0
    found = 0
    for name, check in discover_cases(directory, runtime):
        found += 1
        try:
            errors = check()
        except Exception as exc:  # a crash on a case is that case's failure, not the run's
            errors = [f"{type(exc).__name__}: {exc}"]
        failures += bool(errors)
        print(f"{name}: ok" if not errors else f"{name}: FAIL {'; '.join(errors)}", flush=True)
    return failures if found else -1


def main(argv: list[str] | None = None) -> int:
    from core.commands import add_parity_arguments

    parser = CommandParser(prog="python -m core.parity", description=__doc__.splitlines()[0])
    add_parity_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    failures = run(args.directory, args.runtime)
    if failures < 0:
        print(f"no parity case files found in {args.directory}", file=sys.stderr)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
