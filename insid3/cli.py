"""The ``insid3`` command: every area's sub-commands under one parser.

Each area's ``commands`` module exposes ``register(subparsers)``, which adds parsers whose
``handler`` default takes the parsed args and returns an exit code. The modules import their
heavy dependencies inside the handlers, so ``insid3 segment`` never imports FastAPI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app import commands as app_commands
from core import commands as core_commands
from core import export as export_commands
from core.errors import Insid3Error
from core.settings import CommandParser
from evaluation import commands as evaluation_commands
from insid3.labelling import commands as labelling_commands
from workers import commands as worker_commands

COMMANDS = (core_commands, export_commands, app_commands, worker_commands, evaluation_commands, labelling_commands)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command (no option abbreviations, sub-commands included)."""
    parser = CommandParser(
        prog="insid3", description="Training-free in-context segmentation with a frozen DINOv3."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
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
