"""Core sub-commands of ``insid3``: segment, match, make-checkpoint, parity."""

from __future__ import annotations

import argparse
import json
import sys
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


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def segment_inputs(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[Path]]:
    """The (image, mask) references and the target files of ``insid3 segment``.

    References are every ``--reference IMAGE MASK``, or else the first two positionals (the 1-shot
    form); a target that is a folder stands for the images in it, sorted by name.
    """
    positionals = list(args.inputs)
    references = [tuple(pair) for pair in args.reference]
    if not references:
        if len(positionals) < 3:
            raise InvalidInputError("give REF_IMAGE REF_MASK TARGET..., or --reference IMAGE MASK (repeatable) "
                                    "and TARGET...")
        references, positionals = [(positionals[0], positionals[1])], positionals[2:]
    targets: list[Path] = []
    for given in map(Path, positionals):
        if given.is_dir():
            found = sorted(p for p in given.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InvalidInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {given}")
            targets += found
        elif given.is_file():
            targets.append(given)
        else:
            raise InvalidInputError(f"target {given} is neither a file nor a folder")
    return references, targets


def _segment(args: argparse.Namespace) -> int:
    import time

    from core.errors import Insid3Error
    from core.images import load_image, load_mask
    from core.visualize import segmentation_overlay

    pairs, targets = segment_inputs(args)
    engine = build_engine(args)
    references = engine.encode_references(pairs)
    overlay_reference = (load_image(pairs[0][0]), load_mask(pairs[0][1]))
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for number, target in enumerate(targets, 1):
        start = time.perf_counter()
        try:
            result = engine.segment(target, references)
        except Insid3Error as exc:  # one target's failure is its own: the others still run
            failed += 1
            print(json.dumps({"target": str(target), "error": exc.code, "detail": exc.detail}))
            continue
        mask_path = args.out / f"{target.stem}_mask.png"
        Image.fromarray(result.mask.astype(np.uint8) * 255).save(mask_path)
        segmentation_overlay(*overlay_reference, load_image(target), result.mask).save(
            args.out / f"{target.stem}_overlay.png")
        print(json.dumps({"target": str(target), "mask": str(mask_path), "area": result.area,
                          "bbox": result.bbox, "score": round(result.score, 4)}), flush=True)
        print(f"[{number}/{len(targets)}] {target.name}: {time.perf_counter() - start:.1f} s", file=sys.stderr,
              flush=True)
    return 1 if failed else 0


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
    segment = subparsers.add_parser(
        "segment", help="segment targets like the masked reference(s)",
        usage="insid3 segment [REF_IMAGE REF_MASK] TARGET... [--reference IMAGE MASK ...] [options]",
        description="Segment every target (a file, or a folder of images) like the references: the first two "
                    "positionals (1-shot), or each --reference IMAGE MASK (k-shot). Prints one JSON line per "
                    "target and its progress on stderr; writes OUT/<target>_mask.png and _overlay.png.")
    segment.add_argument("inputs", nargs="+", metavar="[REF_IMAGE REF_MASK] TARGET",
                         help="targets (files or folders), after the reference image and mask unless --reference")
    segment.add_argument("--reference", nargs=2, action="append", default=[], metavar=("IMAGE", "MASK"),
                         help="a reference image and its mask; repeat for k-shot")
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
