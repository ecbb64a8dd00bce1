"""A small Redis client for the location store's hot path: one asyncio connection, pipelined requests.

Why not redis-py: profiling `RedisLocationStore` showed ~75 µs of client CPU per command in redis-py's
layers (pool checkout, a task per send for its timeout, Python RESP3 parsing) against ~20 µs here. A
request is one ``transport.write`` of `hiredis.pack_command` and one future; replies come back in order
on the one connection and are parsed in C by `hiredis.Reader`, so concurrent callers are pipelined
for free (Redis answers each connection's commands in order).

Failure model: a dead connection fails every pending request with `ConnectionError` and the next
request reconnects. Requests are never re-sent by this client (a write may have been applied before the
connection dropped; the caller decides what is safe to repeat). A watchdog aborts the connection when
the oldest pending request waited more than ``timeout`` seconds with no reply at all.
"""

from __future__ import annotations

import asyncio
import collections
import ssl as _ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from sipcore.waiting import within


class RedisReplyError(Exception):
    """Redis answered ``-ERR ...`` (or ``-NOSCRIPT ...``): the command ran, or was refused, server-side."""


# What a command to Redis raises when Redis is away or refuses: callers that degrade (a local view,
# a retry at the next refresh) catch exactly this.
UNREACHABLE = (ConnectionError, OSError, asyncio.TimeoutError, RedisReplyError)


def reply_text(value: bytes | str) -> str:
    """A reply's bulk string as text (RESP replies are bytes)."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect, from a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        u = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(u.query).items()}
        username = unquote(u.username) if u.username else None
        password = unquote(u.password) if u.password else query.get("password")
        db = int(query.get("db", "0"))
        if u.scheme == "unix":
            return cls(path=unquote(u.path), db=db, username=username, password=password)
        if u.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported Redis URL scheme {u.scheme!r} (redis://, rediss://, unix://)")
        if u.path.strip("/"):
            db = int(u.path.strip("/"))
        return cls(
            host=u.hostname or "127.0.0.1",
            port=u.port or 6379,
            db=db,
            username=username,
            password=password,
            tls=u.scheme == "rediss",
        )


class _Connection(asyncio.Protocol):
    """One socket: requests are written in order, replies resolve the oldest waiting future."""

    def __init__(self, timeout: float) -> None:
        self._reader = hiredis.Reader(replyError=RedisReplyError)
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._pending: list[bytes] = []  # packed requests not written yet (see `send`)
        self._transport: asyncio.Transport | None = None
        self._timeout = timeout
        self._progress = 0.0  # loop time of the last reply, or of the send that found nothing pending
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach(transport)

    def attach(self, transport: asyncio.BaseTransport) -> None:
        """Idempotent: uvloop may return from ``create_connection`` before calling `connection_made`."""
        if self._transport is None:
            self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
            self._watchdog = self._loop.call_later(self._timeout / 2, self._check_stall)

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self.closed:
            raise ConnectionError("Redis connection closed")
        fut = self._loop.create_future()
        request = hiredis.pack_command(args)
        if not self._waiting:  # idle: send at once
            self._progress = self._loop.time()
            self._transport.write(request)  # type: ignore[union-attr]
        else:  # requests in flight: gather this loop iteration's requests into one write
            if not self._pending:
                self._loop.call_soon(self._flush)
            self._pending.append(request)
        self._waiting.append(fut)
        return fut

    def _flush(self) -> None:
        if not self.closed:
            self._transport.write(b"".join(self._pending))  # type: ignore[union-attr]
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        reader, waiting = self._reader, self._waiting
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                fut = waiting.popleft()
                if fut.done():  # the caller was cancelled: its reply is still ours to consume
                    continue
                if isinstance(reply, RedisReplyError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self._fail(ConnectionError(f"Redis protocol error: {exc!r}"))
            return
        self._progress = self._loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Redis connection lost: {exc!r}" if exc else "Redis connection closed"))

    def _check_stall(self) -> None:
        if self.closed:
            return
        if self._waiting and self._loop.time() - self._progress > self._timeout:
            self._fail(ConnectionError(f"Redis did not answer within {self._timeout} s"))
            return
        self._watchdog = self._loop.call_later(self._timeout / 2, self._check_stall)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._transport is not None:
            self._transport.abort()
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def close(self) -> None:
        self._fail(ConnectionError("Redis connection closed by the client"))


class RespClient:
    """``await client.call("HGETALL", key)``: the reply as hiredis gives it (bytes, int, list, None);
    an error reply raises `RedisReplyError`, a lost connection `ConnectionError`."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0) -> RespClient:
        return cls(Endpoint.from_url(url), timeout=timeout)

    def call(self, *args: Any) -> Awaitable[Any]:
        """Send now when connected (a future, no coroutine frame); else connect first (a coroutine)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn.send(args)
        return self._connect_and_send(args)

    async def _connect_and_send(self, args: tuple[Any, ...]) -> Any:
        conn = await self._connected()
        return await conn.send(args)

    async def _connected(self) -> _Connection:
        if self._connecting is None:  # one connect attempt shared by every caller waiting for it
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Connection:
        e, loop = self.endpoint, asyncio.get_running_loop()

        def factory() -> _Connection:
            return _Connection(self.timeout)

        async def open_and_setup() -> _Connection:
            if e.path is not None:
                transport, conn = await loop.create_unix_connection(factory, e.path)
            else:
                ctx = _ssl.create_default_context() if e.tls else None
                transport, conn = await loop.create_connection(factory, e.host, e.port, ssl=ctx)
            conn.attach(transport)
            try:
                if e.password is not None:
                    auth = (e.username, e.password) if e.username else (e.password,)
                    await conn.send(("AUTH", *auth))
                if e.db:
                    await conn.send(("SELECT", e.db))
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = await within(open_and_setup(), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"cannot connect to Redis at {e.path or f'{e.host}:{e.port}'}: {exc!r}"
            ) from exc
        self._conn = conn
        return conn

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
