"""`sipcore serve`: run the server on a configuration file (default: the embedded example)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

import structlog

from server.logs import configure_logging


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the SIP server")
    p.add_argument("--config", "-c", default=None, help="YAML file (default: the embedded example)")
    p.add_argument("--udp", action="append", help="override UDP listen address(es), e.g. 127.0.0.1:5060")
    p.add_argument("--tcp", action="append", help="override TCP listen address(es), e.g. 127.0.0.1:5070")
    p.add_argument("--metrics", help="override the metrics HTTP address (host:port, 'off' to disable)")
    p.add_argument("--workers", type=int, help="override the number of worker processes")
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="override the log format")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.app import load_application_config

    try:
        loaded = load_application_config(args.config)
    except Exception as exc:
        print(str(exc))
        return 1
    settings = loaded.settings
    if args.udp:
        settings.sip.udp = args.udp
    if args.tcp:
        settings.sip.tcp = args.tcp
    if args.metrics:
        settings.sip.metrics_address = None if args.metrics == "off" else args.metrics
    if args.workers:
        settings.workers = args.workers
    configure_logging(args.log_format or settings.log_format, settings.log_level)
    if settings.workers > 1:
        from server.workers import run_workers

        return run_workers(loaded)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_serve(loaded))


async def _serve(
    loaded: Any,
    prepare: Callable[[Any], object] | None = None,
    started: Callable[[Any], object] | None = None,
) -> int:
    """Run the application until SIGTERM/SIGINT. Workers (server/workers.py) plug in through
    ``prepare`` (before start: sockets, routing) and ``started`` (after: hand-offs, readiness)."""
    from server.app import Application

    log = structlog.get_logger("sipcore")
    app = Application(loaded)
    if prepare is not None:
        prepare(app)
    await app.start()
    if started is not None:
        started(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(app.reload()))
    await stop.wait()
    log.info("shutting_down")
    await app.close()
    return 0
