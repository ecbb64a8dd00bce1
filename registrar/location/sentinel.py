"""A `RespClient` whose Redis is the master a set of Redis Sentinels name, followed across failovers.

Why: one Redis is a single point of failure for the location and the account state; Sentinel
promotes a replica when the master dies. The client asks the sentinels (in the configured order,
the first that answers) for the master of ``master_name`` whenever it (re)connects, and checks with
``ROLE`` that the server it reached is a master (a sentinel may lag a failover by a moment). A lost
connection is re-established through a fresh discovery by the next request; a ``READONLY`` reply
(the old master demoted to replica while our connection survived) drops the connection, so the
next request discovers the new master too. And every ``check_interval`` the sentinels are asked
again: after a failover the old master may live on, still a master, until the sentinels reconfigure
it (seconds), and writes it takes then are lost when it resyncs from the new master -- the check
bounds that window to about one interval. Requests are never re-sent here: the caller decides (the
location fallback keeps serving locally meanwhile, docs/location.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from registrar.location.resp import UNREACHABLE, Endpoint, RedisReplyError, RespClient, _Connection
from sipcore.waiting import within


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; the port defaults to Sentinel's 26379)."""
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        host, port = text, "26379"
    return host.strip("[]"), int(port)


class SentinelClient(RespClient):
    def __init__(
        self,
        sentinels: tuple[tuple[str, int], ...],
        master_name: str,
        endpoint: Endpoint,
        *,
        timeout: float = 5.0,
        check_interval: float = 1.0,
    ) -> None:
        """``endpoint`` carries the master's credentials and db (its host and port are discovered)."""
        if not sentinels:
            raise ValueError("at least one sentinel address is needed")
        super().__init__(endpoint, timeout=timeout)
        self.sentinels = sentinels
        self.master_name = master_name
        self.check_interval = check_interval
        self.master: tuple[str, int] | None = None  # the last master discovered
        self.switches = 0  # masters followed after the first
        self._watch: asyncio.Task[None] | None = None

    def call(self, *args: Any) -> Any:
        return self._call(args)

    async def _call(self, args: tuple[Any, ...]) -> Any:
        try:
            return await RespClient.call(self, *args)
        except RedisReplyError as exc:
            if str(exc).startswith("READONLY") and self._conn is not None:
                self._conn.close()  # a demoted master: discover again at the next request
            raise

    async def discover(self) -> tuple[str, int]:
        """The master's address, from the first sentinel that knows it; ConnectionError when none."""
        errors: list[str] = []
        for host, port in self.sentinels:
            probe = RespClient(Endpoint(host=host, port=port), timeout=self.timeout)
            try:
                reply = await within(
                    probe.call("SENTINEL", "get-master-addr-by-name", self.master_name), self.timeout
                )
            except UNREACHABLE as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            finally:
                await probe.close()
            if reply:
                return reply[0].decode(), int(reply[1])
            errors.append(f"{host}:{port}: no master named {self.master_name!r}")
        raise ConnectionError("no sentinel named a master: " + "; ".join(errors))

    async def _connect(self) -> _Connection:
        host, port = await self.discover()
        self.endpoint = replace(self.endpoint, host=host, port=port, path=None)
        conn = await super()._connect()
        try:
            role = await within(conn.send(("ROLE",)), self.timeout)
        except BaseException:
            conn.close()
            raise
        if not role or role[0] != b"master":
            conn.close()
            raise ConnectionError(f"{host}:{port} named by the sentinels is not a master (yet)")
        if self.master is not None and self.master != (host, port):
            self.switches += 1
        self.master = (host, port)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._check_master())
        return conn

    async def _check_master(self) -> None:
        """Drop the connection as soon as the sentinels name another master."""
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                named = await self.discover()
            except ConnectionError:
                continue  # no sentinel answers: keep what works
            if named != self.master and self._conn is not None:
                self._conn.close()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        await super().close()

    async def reconnect(self) -> None:
        """Drop the connection: the next request discovers the master again."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def redis_client(
    url: str, sentinels: tuple[str, ...] = (), master_name: str = "mymaster", *, timeout: float = 5.0
) -> RespClient:
    """The client for ``url``, or, with ``sentinels``, for the master they name (``url`` then gives
    only the password and db)."""
    endpoint = Endpoint.from_url(url)
    if not sentinels:
        return RespClient(endpoint, timeout=timeout)
    return SentinelClient(tuple(parse_address(s) for s in sentinels), master_name, endpoint, timeout=timeout)


def subscriber_client(
    url: str, sentinels: tuple[str, ...] = (), master_name: str = "mymaster", *, timeout: float = 2.0
) -> Any:
    """A ``redis.asyncio.Redis`` for pub/sub (`RespClient` has none) to the same Redis as
    `redis_client`: ``url``, or, with ``sentinels``, the master they name, followed across failovers
    by redis-py's own Sentinel."""
    import redis.asyncio as aioredis

    if not sentinels:
        return aioredis.Redis.from_url(url)
    from redis.asyncio.sentinel import Sentinel

    endpoint = Endpoint.from_url(url)
    watcher = Sentinel([parse_address(a) for a in sentinels], socket_timeout=timeout)
    return watcher.master_for(
        master_name, db=endpoint.db, username=endpoint.username, password=endpoint.password
    )


async def follow(
    subscriber: Any,
    channel: str,
    ready: Callable[[], Awaitable[None]],
    receive: Callable[[bytes], None],
    down: Callable[[BaseException], None],
    *,
    retry: float = 1.0,
    tick: float | None = None,
    idle: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Follow ``channel`` on ``subscriber`` (a `subscriber_client`) until cancelled: subscribe, then
    ``ready`` (read what was published while not subscribed), then hand each message to ``receive``
    (and, with ``tick``, call ``idle`` at least every ``tick`` seconds); on any failure ``down``, and
    all again after ``retry``. Why subscribe before reading: what changes in between is both read and
    received, never missed."""
    while True:
        pubsub = subscriber.pubsub()
        try:
            await pubsub.subscribe(channel)
            await ready()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=tick)
                if message is not None:
                    receive(message["data"])
                if idle is not None:
                    await idle()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            down(exc)
            await asyncio.sleep(retry)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
