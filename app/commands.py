"""``insid3 serve``: the HTTP service under uvicorn."""

from __future__ import annotations

import argparse

from app.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "serve", help="run the HTTP API (and the web page at /)",
        description="Run the HTTP API. Every option is also settable as INSID3_<OPTION> in the environment "
                    "(e.g. INSID3_MAX_BATCH, INSID3_API_KEYS); options given here win.",
    )
    Settings.add_arguments(parser)
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    """Build the settings (options over environment) and run uvicorn until interrupted.

    Unusable settings or API keys stop it before the engine (torch, the model) is even imported.
    """
    import logging

    from app.auth import KeyRing
    from core.startup import PROGRESS

    settings = Settings.from_args(args)
    keyring = KeyRing.of(settings)
    if not settings.redis_url:  # the engine runs here: warm it up and check the deadline against it
        PROGRESS.expect(settings.request_timeout_s, explicit="request_timeout_s" in settings.model_fields_set)

    import uvicorn

    from app.main import create_app

    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings, keyring=keyring), host=settings.host, port=settings.port, log_level=settings.log_level,
        timeout_graceful_shutdown=settings.request_timeout_s,
    )
    return 0
