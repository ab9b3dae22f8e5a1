"""The ``insid3`` command.

Each area registers its own sub-commands: a module listed in ``COMMAND_MODULES`` exposes
``register(subparsers)``, which adds parsers whose ``handler`` default takes the parsed args and
returns an exit code. Modules are imported lazily so ``insid3 segment`` never imports FastAPI.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from core.errors import Insid3Error

COMMAND_MODULES = (
    "core.commands",
    "core.export",
    "app.commands",
    "workers.commands",
    "evaluation.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="insid3", description="Training-free in-context segmentation with a frozen DINOv3."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that area is not part of this installation
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``insid3`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except Insid3Error as exc:
        print(f"insid3 {args.command}: error: {exc.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
