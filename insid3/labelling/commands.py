"""``insid3 label`` (a folder into COCO, YOLO, PNG or Label Studio labels from a few examples) and
``insid3 tune`` (tau and merge_threshold by leave-one-out over the examples)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from core.errors import InvalidInputError
from core.settings import EngineSettings
from insid3.labelling import FORMATS
from insid3.labelling.tune import DEFAULT_MERGE_THRESHOLDS, DEFAULT_TAUS, require_folds

FOLDER_FORMATS = ("yolo", "png")
NOT_FOR_TUNE = ("tau", "merge_threshold")  # tune searches them


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of numbers, got {text!r}") from None
    if not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"values must lie in [0, 1], got {text!r}")
    return values


def _label(args: argparse.Namespace) -> int:
    from insid3.labelling.journal import check_resumable, journal_path
    from insid3.labelling.runner import Job, run
    from insid3.labelling.sources import collect_examples, list_images
    from insid3.labelling.tune import read_params

    if args.format not in FORMATS:
        raise InvalidInputError(f"unknown format {args.format!r}: choose {', '.join(FORMATS)}")
    if args.concurrency < 1:
        raise InvalidInputError(f"--concurrency must be at least 1, got {args.concurrency}")
    categories = collect_examples(args.reference, args.examples, args.category)
    targets = list_images(args.images, exclude=args.out if args.format in FOLDER_FORMATS else None)
    check_resumable(journal_path(args.out), args.resume)
    params = read_params(args.params) if args.params else {}
    job = Job(categories, targets, args.out, args.format,
              tau=args.tau if args.tau is not None else params.get("tau"),
              merge_threshold=args.merge_threshold if args.merge_threshold is not None
              else params.get("merge_threshold"),
              instances=args.instances, resume=args.resume, image_url=args.image_url)
    if args.server:
        from insid3.labelling.remote import RemoteLabeller

        return run(job, RemoteLabeller(args.server, args.api_key, args.concurrency, job, args.timeout))
    from core.commands import build_engine
    from insid3.labelling.runner import LocalLabeller

    return run(job, LocalLabeller(build_engine(args), job))


def _tune(args: argparse.Namespace) -> int:
    from core.commands import build_engine
    from insid3.labelling.sources import Example, check_example
    from insid3.labelling.tune import best, grid_search, save, table

    examples = [Example(Path(image), Path(mask)) for image, mask in args.example]
    for example in examples:
        check_example(example)
    require_folds(examples)
    scores = grid_search(build_engine(args), examples, args.tau_grid, args.merge_grid)
    choice = best(scores)
    print(table(scores))
    if args.save:
        save(args.save, choice, examples)
        print(f"saved to {args.save}")
    print(f"best tau={choice.tau:g} merge_threshold={choice.merge_threshold:g} mIoU={choice.miou:.4f}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``label`` and ``tune``."""
    label = subparsers.add_parser(
        "label", help="label a folder of images from a few examples (COCO, YOLO, PNG, Label Studio)",
        description="Segment every image of a folder like the examples, into a dataset. Resumable: a journal "
                    "beside the output records each finished image (OUT.journal.jsonl).")
    label.add_argument("--reference", nargs=2, action="append", metavar=("IMAGE", "MASK"),
                       help="an example image and its mask (repeat for k-shot)")
    label.add_argument("--examples", type=Path, help='several categories: JSON {"category": [["image", "mask"], ...]}')
    label.add_argument("--category", help="the name of the --reference examples' category (default: object)")
    label.add_argument("--images", required=True, help="a folder (searched recursively) or a glob pattern")
    label.add_argument("--out", type=Path, required=True,
                       help="the output: a file for coco and labelstudio, a folder for yolo and png")
    label.add_argument("--format", default="coco", help=f"one of {', '.join(FORMATS)} (default: coco)")
    label.add_argument("--instances", action="store_true", help="one annotation per connected component")
    label.add_argument("--params", type=Path, help="tau and merge_threshold from `insid3 tune --save FILE`")
    label.add_argument("--resume", action="store_true", help="continue the run whose journal is beside --out")
    label.add_argument("--server", metavar="URL", help="label through a running service instead of in-process")
    label.add_argument("--api-key", default=os.environ.get("INSID3_API_KEY"),
                       help="the service's X-API-Key (default: env INSID3_API_KEY)")
    label.add_argument("--concurrency", type=int, default=8, help="--server: requests in flight (default: 8)")
    label.add_argument("--timeout", type=float, default=120.0,
                       help="--server: seconds per request, retries included (default: 120)")
    label.add_argument("--image-url", default="/data/local-files/?d=",
                       help="labelstudio: the prefix of each task's image URL, before the image's name "
                            "(default: Label Studio's local files, /data/local-files/?d=)")
    EngineSettings.add_arguments(label)
    label.set_defaults(handler=_label)

    tune = subparsers.add_parser(
        "tune", help="choose tau and merge_threshold by leave-one-out over labelled examples",
        description="Each example in turn is the target, the others its references; prints the grid's mean IoU "
                    "and, last, the best setting.")
    tune.add_argument("--example", nargs=2, action="append", required=True, metavar=("IMAGE", "MASK"),
                      help="a labelled example (at least two)")
    tune.add_argument("--tau-grid", type=_floats, default=DEFAULT_TAUS,
                      help="taus to try, comma-separated (default: 0.3,...,0.9)")
    tune.add_argument("--merge-grid", type=_floats, default=DEFAULT_MERGE_THRESHOLDS,
                      help="merge thresholds to try, comma-separated (default: 0.1,0.2,0.3,0.4)")
    tune.add_argument("--save", type=Path, help="write the best setting as JSON (for `insid3 label --params`)")
    EngineSettings.add_arguments(tune, [name for name in EngineSettings.model_fields if name not in NOT_FOR_TUNE])
    tune.set_defaults(handler=_tune)
