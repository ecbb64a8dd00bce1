"""Several server processes on the same ports (SO_REUSEPORT): the kernel spreads UDP datagrams and TCP
connections over them. They must share state through Redis (location) to see each other's phones."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import structlog

log = structlog.get_logger("sipcore.workers")


def run_workers(config_path: str | None, settings: Any) -> int:
    if settings.workers > 1 and getattr(settings, "location_backend", "memory") == "memory":
        log.warning("workers_without_shared_location", hint="use registrar.location.backend: redis")
    settings.sip.reuse_port = True
    children: list[int] = []
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # child: one full server with SO_REUSEPORT sockets
            try:
                import uvloop  # type: ignore[import-not-found]

                uvloop.install()
            except ImportError:
                pass
            from server.app import load_application_config
            from server.commands.serve import _serve

            loaded = load_application_config(config_path)
            loaded.settings.sip = settings.sip
            if index > 0:
                loaded.settings.sip.metrics_address = None  # one metrics endpoint: the first worker's
            os._exit(asyncio.run(_serve(loaded)))
        children.append(pid)
    log.info("workers_started", pids=children)

    def forward(signum: int, _frame: Any) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    status = 0
    for pid in children:
        _, code = os.waitpid(pid, 0)
        status = status or (
            os.waitstatus_to_exitcode(code) if hasattr(os, "waitstatus_to_exitcode") else code
        )
    sys.stdout.flush()
    return int(status)
