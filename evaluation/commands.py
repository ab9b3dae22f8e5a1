"""``insid3 eval``: run an official benchmark (one fold, or every fold averaged)."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InvalidInputError
from core.settings import EngineSettings, Precision
from evaluation.datasets import DATASET_NAMES, KEYPOINT, build_segmentation, folds_of

if TYPE_CHECKING:
    from core.engine import Insid3

def register(subparsers: Any) -> None:
    """Add the ``eval`` sub-command."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate on an official benchmark (COCO-20i, LVIS-92i, ..., SPair-71k)",
        description="Draws exactly the official INSID3 episodes for a seed and reports the official "
        "metrics (mIoU and FB-IoU on the S x S grid; PCK for SPair-71k). Resumable with --resume.",
    )
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="folder holding the datasets")
    folds = parser.add_mutually_exclusive_group()
    folds.add_argument("--fold", type=int, default=None, help="fold to evaluate (default 0)")
    folds.add_argument("--all-folds", action="store_true", help="every fold, then their mean (the paper)")
    parser.add_argument("--shots", type=int, default=1, help="references per episode")
    EngineSettings.add_arguments(parser, [name for name in EngineSettings.model_fields if name != "precision"])
    parser.add_argument("--precision", default="fp32", choices=typing.get_args(Precision),
                        help="encoder precision (default: fp32, as the official evaluation runs it, "
                             "whatever INSID3_PRECISION says)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1, help="episodes per engine batch")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N episodes")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="run folder (default output/eval/<dataset>-<fold>-<shots>shot)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --output-dir")
    parser.add_argument("--debiased", action="store_true", help="spair: match positionally debiased features")
    parser.set_defaults(handler=run_eval_command)


def _folds(args: argparse.Namespace) -> list[int]:
    """The folds to run; a clear error for folds that do not exist."""
    count = folds_of(args.dataset)
    if count == 0:
        if args.fold is not None or args.all_folds:
            raise InvalidInputError(f"--dataset {args.dataset} has no folds: drop --fold/--all-folds")
        return [0]
    if args.all_folds:
        return list(range(count))
    fold = 0 if args.fold is None else args.fold
    if not 0 <= fold < count:
        raise InvalidInputError(f"--fold {fold} does not exist for {args.dataset}: use 0..{count - 1}")
    return [fold]


def _validate(args: argparse.Namespace) -> None:
    for flag, value in (("--shots", args.shots), ("--batch-size", args.batch_size)):
        if value < 1:
            raise InvalidInputError(f"{flag} must be at least 1, got {value}")
    if args.limit is not None and args.limit < 1:
        raise InvalidInputError(f"--limit must be at least 1, got {args.limit}")
    if args.debiased and args.dataset != KEYPOINT:
        raise InvalidInputError("--debiased only applies to --dataset spair")
    if not args.data_root.is_dir():
        raise InvalidInputError(f"--data-root {args.data_root} is not a folder")


def _output_dir(args: argparse.Namespace, folds: list[int]) -> Path:
    if args.output_dir is not None:
        return args.output_dir
    part = "" if folds_of(args.dataset) == 0 else ("-all-folds" if args.all_folds else f"-fold{folds[0]}")
    return Path("output") / "eval" / f"{args.dataset}{part}-{args.shots}shot"


def _identity(args: argparse.Namespace, engine: Insid3, fold: int | None) -> dict[str, Any]:
    """Everything that decides the numbers; a resumed run must match it."""
    identity: dict[str, Any] = {
        "dataset": args.dataset, "fold": fold, "shots": args.shots, "seed": args.seed,
        "model_id": engine.model_id, "image_size": engine.image_size,
        "svd_components": engine.options.svd_components, "precision": args.precision,
    }
    if args.dataset == KEYPOINT:
        identity["debiased"] = args.debiased
        del identity["shots"], identity["fold"]
    else:
        identity.update(tau=engine.options.tau, merge_threshold=engine.options.merge_threshold,
                        crf=engine.options.crf)
    return identity


def _build_engine(args: argparse.Namespace) -> Insid3:
    """The engine at S x S output (the official metrics are computed there), from the engine
    options over the ``INSID3_*`` environment; no CRF for keypoints."""
    from core.engine import Insid3

    settings = EngineSettings.from_args(args)
    return Insid3.build(settings, crf=settings.crf and args.dataset != KEYPOINT, resize_to_original=False)


def run_eval_command(args: argparse.Namespace) -> int:
    """Handler of ``insid3 eval``."""
    from evaluation.datasets import SpairDataset
    from evaluation.runner import RunOptions, mean_over_folds, run_keypoints, run_segmentation
    from evaluation.state import RunDir, to_json

    _validate(args)
    folds = _folds(args)
    out = _output_dir(args, folds)
    command = "insid3 eval " + " ".join(f"{k}={v}" for k, v in vars(args).items() if k != "handler")
    if args.dataset == KEYPOINT:
        dataset = SpairDataset(args.data_root)
        engine = _build_engine(args)
        options = RunOptions(args.batch_size, args.limit, args.resume, label="spair", command=command)
        results = run_keypoints(engine, dataset, RunDir(out), _identity(args, engine, None), options)
        print(", ".join(f"PCK@{alpha} = {value:.2f}" for alpha, value in results["pck"].items()))
        return 0
    first = build_segmentation(args.dataset, args.data_root, folds[0], args.shots)  # fails fast on bad data
    engine = _build_engine(args)
    has_folds = folds_of(args.dataset) > 0
    fold_results: dict[int, dict[str, Any]] = {}
    for fold in folds:
        dataset = first if fold == folds[0] else build_segmentation(args.dataset, args.data_root, fold, args.shots)
        label = f"{args.dataset} fold {fold}" if has_folds else args.dataset
        options = RunOptions(args.batch_size, args.limit, args.resume, label=label, command=command)
        identity = _identity(args, engine, fold if has_folds else None)
        results = run_segmentation(engine, dataset, RunDir(out / f"fold{fold}" if args.all_folds else out),
                                   identity, options)
        fold_results[fold] = results
        print(f"{label}: mIoU = {results['miou']:.1f} (FB-IoU {results['fb_iou']:.1f}, "
              f"{results['episodes']} episodes)")
    if args.all_folds:
        summary = {"dataset": args.dataset, "shots": args.shots, "seed": args.seed, **mean_over_folds(fold_results)}
        (out / "results.json").write_text(to_json(summary), encoding="utf-8")
        RunDir(out).log(f"{command}: mean over folds: mIoU = {summary['miou']:.1f}")
        print(f"{args.dataset}: mean mIoU over {len(folds)} folds = {summary['miou']:.1f}")
    return 0
