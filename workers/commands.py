"""``insid3 worker`` (a Redis Streams worker) and ``insid3 queue`` (stats, trim, dead letters)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from workers.settings import WorkerSettings

if TYPE_CHECKING:
    from workers.admin import Admin


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``worker`` and ``queue`` sub-commands."""
    worker = subparsers.add_parser(
        "worker", help="run a worker of the Redis job queue",
        description="Serve jobs from the Redis stream fed by `insid3 serve --redis-url`. Every option is also "
                    "settable as INSID3_<OPTION> in the environment; options given here win. SIGTERM drains.",
    )
    WorkerSettings.add_arguments(worker)
    worker.set_defaults(handler=run_worker)

    queue = subparsers.add_parser("queue", help="inspect and maintain the Redis job queue")
    queue.add_argument("--redis-url", help="default: INSID3_REDIS_URL or redis://127.0.0.1:6379/0")
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    stats = actions.add_parser("stats", help="backlog, pending jobs per consumer, dead letters, workers")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(handler=_queue_handler(_stats))
    trim = actions.add_parser("trim", help="drop finished jobs, or everything but the newest N")
    trim.add_argument("--maxlen", type=int,
                      help="keep only the newest N entries, processed or not (default: drop processed ones)")
    trim.add_argument("--clear-pending", action="store_true",
                      help="with --maxlen: also acknowledge pending entries whose data was trimmed")
    trim.set_defaults(handler=_queue_handler(_trim))
    dead = actions.add_parser("dead-letters", help="list (or purge) dead-lettered jobs")
    dead.add_argument("--count", type=int, default=20)
    dead.add_argument("--purge", action="store_true", help="delete every dead letter")
    dead.set_defaults(handler=_queue_handler(_dead_letters))


def run_worker(args: argparse.Namespace) -> int:
    """Build the engine, then serve jobs until SIGTERM/SIGINT (exit 0 after draining)."""
    import gc
    import logging
    import signal

    from core.defaults import DEFAULT_REQUEST_TIMEOUT_S
    from core.engine import Insid3
    from core.startup import PROGRESS
    from workers.connection import connect
    from workers.metrics import serve_http
    from workers.worker import Worker

    settings = WorkerSettings.from_args(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    PROGRESS.expect(DEFAULT_REQUEST_TIMEOUT_S, explicit=True)  # the API's deadline: not this process's to raise
    engine = Insid3.build(settings)
    gc.collect()
    gc.freeze()  # the model's many long-lived objects out of the collector's way: no 100 ms+ gen-2 pauses
    client = connect(settings.redis_url)
    worker = Worker(settings, engine, client)
    if settings.metrics_port is not None:
        serve_http(settings.metrics_port, worker.health.reason)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        logging.getLogger("insid3.worker").info(
            "worker %s ready: %s at %d on %s, max batch %d", settings.name, engine.model_id,
            engine.image_size, engine.device, settings.max_batch)
        try:
            await worker.run()
        finally:
            await client.aclose()

    asyncio.run(serve())
    return 0


QueueAction = Callable[["Admin", argparse.Namespace], Awaitable[int]]


def _queue_handler(action: QueueAction) -> Callable[[argparse.Namespace], int]:
    """A handler running ``action(queue, args)`` on a client of ``--redis-url``."""

    def handler(args: argparse.Namespace) -> int:
        from redis.exceptions import ConnectionError as RedisConnectionError

        from workers.admin import Admin
        from workers.connection import connect

        url = args.redis_url or WorkerSettings().redis_url

        async def run() -> int:
            client = connect(url)
            try:
                return await action(Admin(client), args)
            finally:
                await client.aclose()

        try:
            return asyncio.run(run())
        except RedisConnectionError as exc:
            print(f"insid3 queue: cannot reach Redis at {url}: {exc}", file=sys.stderr)
            return 1

    return handler


async def _stats(queue: Admin, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from workers.references import RedisReferenceStorage

    streams = {model: await queue.for_model(model).stats() for model in await queue.models()}
    reference_bytes = await RedisReferenceStorage(queue.client, queue.keys).used_bytes()
    if args.json:
        print(json.dumps({model: asdict(stats) for model, stats in streams.items()}, indent=2))
        return 0
    print(f"references: {reference_bytes:,} bytes of features stored (INSID3_REFERENCE_BUDGET_BYTES)")
    served = {w["model_key"] for stats in streams.values() for w in stats.workers if "model_key" in w}
    if len(served) > 1:
        print(f"mixed pool: live workers serve {len(served)} models ({', '.join(sorted(served))}); "
              f"each reads only its model's stream")
    for model, stats in streams.items():
        print(f"stream {queue.for_model(model).keys.stream}: {stats.length} entries, backlog {stats.backlog}, "
              f"pending {stats.pending}, dead letters {stats.dead_letters}")
        for consumer in stats.consumers:
            print(f"  consumer {consumer.name}: {consumer.pending} pending, idle {consumer.idle_ms / 1000:.1f} s")
    for worker in next(iter(streams.values())).workers if streams else []:
        print(f"  worker {worker['name']} (pid {worker['pid']} on {worker['host']}): {worker['model']} at "
              f"{worker['image_size']} on {worker['device']}, {worker['batches']} batches, {worker['jobs']} jobs")
    return 0


async def _trim(queue: Admin, args: argparse.Namespace) -> int:
    for model in await queue.models():
        stream = queue.for_model(model)
        if args.maxlen is None:
            print(f"{stream.keys.stream}: removed {await stream.trim_acked()} processed entries")
            continue
        trimmed, cleared = await stream.trim(args.maxlen, args.clear_pending)
        print(f"{stream.keys.stream}: removed {trimmed} entries; acknowledged {cleared} pending entries "
              f"left without data")
    return 0


async def _dead_letters(queue: Admin, args: argparse.Namespace) -> int:
    if args.purge:
        print(f"deleted {await queue.purge_dead_letters()} dead letters")
        return 0
    for entry_id, fields in await queue.dead_letters(args.count):
        print(json.dumps({"id": entry_id, **fields}))
    return 0
