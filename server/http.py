"""A tiny asyncio HTTP endpoint for Prometheus (/metrics) and health checks (/healthz).

Kept on asyncio rather than prometheus_client's thread server so it shares the event loop and its
health answer reflects whether the loop is actually responsive.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class HttpEndpoint:
    def __init__(self, health: Callable[[], dict[str, object]]) -> None:
        self.health = health
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
            line = await asyncio.wait_for(reader.readline(), 5.0)
            while True:  # drain request headers
                h = await asyncio.wait_for(reader.readline(), 5.0)
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.startswith("/metrics"):
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
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

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
