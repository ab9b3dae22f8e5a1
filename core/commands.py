"""Core sub-commands of ``insid3``: segment, match, make-checkpoint, parity."""

from __future__ import annotations

import argparse
import json
import typing
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core.errors import InvalidInputError
from core.settings import EngineSettings, Runtime
from core.specs import MODEL_SIZES

if TYPE_CHECKING:
    from core.engine import Insid3


def build_engine(args: argparse.Namespace) -> Insid3:
    """An engine from the engine options given (over the ``INSID3_*`` environment)."""
    from core.engine import Insid3
    from core.settings import EngineSettings

    return Insid3.build(EngineSettings.from_args(args))


def _segment(args: argparse.Namespace) -> int:
    from core.images import load_image, load_mask
    from core.visualize import segmentation_overlay

    engine = build_engine(args)
    reference = engine.encode_reference(args.ref_image, args.ref_mask)
    ref_image = load_image(args.ref_image)
    ref_mask = load_mask(args.ref_mask)
    args.out.mkdir(parents=True, exist_ok=True)
    for target_path, result in zip(args.targets, engine.segment_batch(args.targets, [reference]), strict=True):
        stem = Path(target_path).stem
        mask_path = args.out / f"{stem}_mask.png"
        Image.fromarray(result.mask.astype(np.uint8) * 255).save(mask_path)
        overlay = segmentation_overlay(ref_image, ref_mask, load_image(target_path), result.mask)
        overlay.save(args.out / f"{stem}_overlay.png")
        print(json.dumps({"target": str(target_path), "mask": str(mask_path), "area": result.area,
                          "bbox": result.bbox, "score": round(result.score, 4)}))
    return 0


def _parse_point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a point is X,Y (e.g. 120,45), got {text!r}") from None
    return x, y


def _match(args: argparse.Namespace) -> int:
    from core.images import load_image
    from core.visualize import match_overlay

    if not args.point:
        raise InvalidInputError("give at least one --point X,Y")
    engine = build_engine(args)
    result = engine.match(args.target, engine.encode_reference(args.ref_image), args.point,
                          debiased=not args.raw)
    for (x, y), (tx, ty), confidence in zip(args.point, result.points, result.confidence, strict=True):
        print(f"{x:g},{y:g} -> {tx:.1f},{ty:.1f} (confidence {confidence:.3f})")
    args.out.mkdir(parents=True, exist_ok=True)
    overlay_path = args.out / f"{Path(args.target).stem}_matches.png"
    match_overlay(load_image(args.ref_image), np.array(args.point), load_image(args.target),
                  result.points).save(overlay_path)
    print(f"overlay: {overlay_path}")
    return 0


def _make_checkpoint(args: argparse.Namespace) -> int:
    from core.checkpoint import make_checkpoint

    path = make_checkpoint(args.model_size, args.out, args.seed)
    print(f"wrote a random {args.model_size} checkpoint (seed {args.seed}) to {path}")
    return 0


def _parity(args: argparse.Namespace) -> int:
    from core.parity import main as parity_main

    return parity_main([str(args.directory), "--runtime", args.runtime])


def add_parity_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``insid3 parity`` (= ``python -m core.parity``)."""
    parser.add_argument("directory", type=Path, help="a parity folder (backbone/, insid3/, or their parent): "
                                                     "tests/parity, or the full set in ../shared/parity")
    parser.add_argument("--runtime", default="torch", choices=typing.get_args(Runtime)[1:],
                        help="encoder runtime for the backbone features (default: torch, the reference)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the core sub-commands."""
    segment = subparsers.add_parser("segment", help="segment targets like the masked reference")
    segment.add_argument("ref_image")
    segment.add_argument("ref_mask")
    segment.add_argument("targets", nargs="+")
    segment.add_argument("--out", type=Path, default=Path("output"))
    EngineSettings.add_arguments(segment)
    segment.set_defaults(handler=_segment)

    match = subparsers.add_parser("match", help="find reference keypoints in a target")
    match.add_argument("ref_image")
    match.add_argument("target")
    match.add_argument("--point", type=_parse_point, action="append", default=[], metavar="X,Y")
    match.add_argument("--raw", action="store_true", help="match raw instead of debiased features")
    match.add_argument("--out", type=Path, default=Path("output"))
    EngineSettings.add_arguments(match)
    match.set_defaults(handler=_match)

    checkpoint = subparsers.add_parser("make-checkpoint", help="write a random checkpoint in the official layout")
    checkpoint.add_argument("--model-size", default="small", choices=MODEL_SIZES)
    checkpoint.add_argument("--out", type=Path, required=True)
    checkpoint.add_argument("--seed", type=int, default=0)
    checkpoint.set_defaults(handler=_make_checkpoint)

    parity = subparsers.add_parser("parity", help="check this code against official golden data")
    add_parity_arguments(parity)
    parity.set_defaults(handler=_parity)
