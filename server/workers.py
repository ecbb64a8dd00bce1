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
    if getattr(settings, "location_backend", "memory") == "memory":
        print(
            f"{config_path or 'the embedded configuration'}: server.workers > 1 needs "
            "registrar.location.backend: redis (workers must share registrations)",
            file=sys.stderr,
        )
        return 2
    settings.sip.reuse_port = True
    children: list[int] = []
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # child: one full server with SO_REUSEPORT sockets and its own CDR spool
            os.environ["SIPCORE_WORKER"] = str(index)
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

    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = stopping or signum in (signal.SIGTERM, signal.SIGINT)
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
        if os.WIFSIGNALED(code) and stopping and os.WTERMSIG(code) in (signal.SIGTERM, signal.SIGINT):
            continue  # asked to stop before its own handlers were installed: a clean stop
        status = status or os.waitstatus_to_exitcode(code)
    sys.stdout.flush()
    return int(status)
