"""``insid3 serve``: the HTTP service under uvicorn."""

from __future__ import annotations

import argparse

from core.specs import MODEL_SIZES

SERVE_OPTIONS = ("host", "port", "model_size", "weights", "image_size", "device", "redis_url")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "serve", help="run the HTTP API (and the web page at /)",
        description="Run the HTTP API. Every option is also settable as INSID3_<OPTION> in the environment "
                    "(e.g. INSID3_MAX_BATCH, INSID3_API_KEYS); options given here win.",
    )
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8000)")
    parser.add_argument("--model-size", choices=MODEL_SIZES, help="DINOv3 backbone (default large)")
    parser.add_argument("--weights", help="weights file, or hub[:tag] (default: the official file in pretrain/)")
    parser.add_argument("--image-size", type=int, help="side of the square images are resized to (default 1024)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--redis-url", help="send jobs to the Redis worker pool instead of running the engine here")
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    """Build the settings (options over environment) and run uvicorn until interrupted."""
    import logging

    import uvicorn

    from app.main import create_app
    from app.settings import Settings

    settings = Settings.from_args(args, SERVE_OPTIONS)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
        timeout_graceful_shutdown=settings.request_timeout_s,
    )
    return 0
