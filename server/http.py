"""A tiny asyncio HTTP endpoint for Prometheus (/metrics) and health checks (/healthz).

Kept on asyncio rather than prometheus_client's thread server so it shares the event loop and its
health answer reflects whether the loop is actually responsive.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from sipcore.waiting import within

log = structlog.get_logger("sipcore.metrics")

PEER_TIMEOUT = 2.0  # a worker that does not answer a scrape in time is reported down, not waited on


class HttpEndpoint:
    """``peers`` (with several workers): gives the worker channel's `server.admin_peers.AdminPeers`
    (or None), through which /metrics gathers every worker's figures into one exposition for the
    whole server (`server.metrics.merge_expositions`)."""

    def __init__(
        self, health: Callable[[], dict[str, object]], peers: Callable[[], Any] | None = None
    ) -> None:
        self.health = health
        self.peers = peers
        self.server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        try:
            self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        except OSError as exc:
            from sipcore.transport import ListenError

            raise ListenError.of(exc, "HTTP", f"{host}:{port} (metrics)") from None
        sock = self.server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await within(reader.readline(), 5.0)
            while True:  # drain request headers
                h = await within(reader.readline(), 5.0)
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.startswith("/metrics"):
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, await self.metrics()
            elif path.startswith("/healthz"):
                status, ctype = "200 OK", "application/json"
                body = json.dumps(self.health()).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def metrics(self) -> bytes:
        """This process's exposition, or with several workers the whole server's: every worker's
        answer to the "metrics" question summed, and ``sipcore_worker_up`` saying who answered."""
        local = generate_latest(REGISTRY)
        peers = self.peers() if self.peers is not None else None
        if peers is None or peers.count <= 1:
            return local + _up(0, 1).encode()
        from server.metrics import merge_expositions

        answers = await peers.ask_others("metrics", timeout=PEER_TIMEOUT)
        texts = {peers.index: local.decode() + _up(peers.index, 1)}
        for index, answer in answers.items():
            if isinstance(answer, str):
                texts[index] = answer + _up(index, 1)
            else:
                log.warning("metrics_worker_unanswered", worker=index, error=str(answer))
                texts[index] = _up(index, 0)
        return merge_expositions(texts)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _up(index: int, up: int) -> str:
    return (
        "# HELP sipcore_worker_up Worker process answered this scrape (1) or not (0)\n"
        f'# TYPE sipcore_worker_up gauge\nsipcore_worker_up{{worker="{index}"}} {up}\n'
    )
