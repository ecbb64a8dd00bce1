"""Account state shared by every process of every host through Redis (``registrar.location.backend:
redis``, where the operator already shares state across hosts).

Redis is the truth; the call controller's reads stay synchronous on a local mirror.

Calls in progress: each process (``host/pid``) counts the calls it owns and writes its own count for
the account to its hash ``<prefix>calls:<process>`` at once (absolute value and a sequence number,
a Lua script that also publishes the change on ``<prefix>events``). The hash expires unless its
process refreshes it (every ``refresh_interval``, TTL ``ttl``), so a host that dies stops counting
within ``ttl`` + ``refresh_interval``; a clean stop deletes it at once. Every process mirrors the
others' hashes (`CallCounts`, summed): from the published changes, and from a full read at every
refresh, which also drops processes whose hash expired. A change applied while Redis was away is
rewritten whole at the next refresh (the process's table, not a replay of steps).

Forwarding set by feature code: applied to the mirror at once, then written to the hash
``<prefix>fwd`` with a version from ``<prefix>fwd:ver`` (one script: write and publish), so it is
durable in Redis and survives restarts of sipcore; mirrors take a change only if its version is
newer (`ForwardingView`), so they converge whatever the order of publications and reads. A change
Redis did not take is retried at the next refresh.

What is left: two calls set up in two processes in the same instant both read the count before
either's change reached the other (publication through Redis: about a millisecond), and a process
that lost its subscription sees others' changes only at its next refresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from collections.abc import Awaitable
from typing import Any

import structlog

from registrar.location.resp import RedisReplyError, RespClient
from routing.feature_codes import ForwardingChange
from routing.model import ForwardKind
from routing.state import Overrides
from server.account_state import CallCounts, ForwardingView

log = structlog.get_logger("sipcore.account_state")

TTL = 30.0
REFRESH_INTERVAL = 5.0
START_TIMEOUT = 5.0
RETRY = 1.0

# KEYS: own hash, process set. ARGV: process, seq, ttl ms, channel, account, calls, message.
# -1: the hash had expired (this process's other counts are gone: rewrite the whole table).
_SET_CALLS = """
local existed = redis.call('EXISTS', KEYS[1])
if tonumber(ARGV[2]) <= tonumber(redis.call('HGET', KEYS[1], '~seq') or '0') then return 0 end
if tonumber(ARGV[6]) > 0 then redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
else redis.call('HDEL', KEYS[1], ARGV[5]) end
redis.call('HSET', KEYS[1], '~seq', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[7])
if existed == 0 then return -1 end
return 1
"""

# KEYS: own hash, process set. ARGV: process, seq, ttl ms, channel, message, account, calls, ...
_SET_TABLE = """
if tonumber(ARGV[2]) <= tonumber(redis.call('HGET', KEYS[1], '~seq') or '0') then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '~seq', ARGV[2])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# KEYS: forwarding hash, version counter. ARGV: field (JSON [account, kind]), target (JSON), channel.
_FORWARD = """
local v = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], '[' .. v .. ',' .. ARGV[2] .. ']')
redis.call('PUBLISH', ARGV[3], '["f",' .. v .. ',' .. ARGV[1] .. ',' .. ARGV[2] .. ']')
return v
"""

_SCRIPTS = {name: (body, hashlib.sha1(body.encode()).hexdigest()) for name, body in
            (("calls", _SET_CALLS), ("table", _SET_TABLE))}  # fmt: skip

UNREACHABLE = (ConnectionError, OSError, asyncio.TimeoutError, RedisReplyError)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(reply: list[Any] | None) -> dict[str, str]:
    items = [_text(v) for v in reply or ()]
    return dict(zip(items[::2], items[1::2], strict=True))


def process_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


class RedisAccountState:
    """This process's mirror of the shared account state, and its writes (module docstring)."""

    def __init__(
        self,
        client: RespClient,
        subscriber: Any,
        prefix: str,
        process: str | None = None,
        ttl: float = TTL,
        refresh_interval: float = REFRESH_INTERVAL,
        seed: Overrides | None = None,
    ) -> None:
        self._r = client
        self._seed = seed or {}  # this host's forwarding.json, for a Redis that never held any
        self._sub = subscriber  # redis.asyncio.Redis: RespClient has no pub/sub
        self.process = process or process_id()
        self._ttl_ms = str(int(ttl * 1000))
        self._refresh_interval = refresh_interval
        self._own_key = f"{prefix}calls:{self.process}"
        self._calls_prefix = f"{prefix}calls:"
        self._procs_key = f"{prefix}procs"
        self._fwd_key = f"{prefix}fwd"
        self._ver_key = f"{prefix}fwd:ver"
        self._channel = f"{prefix}events"
        self._counts = CallCounts()
        self._forwarding = ForwardingView({})
        self._seqs: dict[str, int] = {}  # per other process: the newest sequence number taken
        self._gone: set[str] = set()  # processes that announced their stop
        self._seq = int(time.time() * 1000) * 1000  # grows across restarts; below 2^53 (Lua numbers)
        self._dirty = True  # our hash must be rewritten whole (start, or a write Redis did not take)
        self._unsent: list[ForwardingChange] = []
        self._writes: set[asyncio.Future[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._loaded = asyncio.Event()
        self.up = False

    @classmethod
    def from_url(cls, url: str, prefix: str, **kwargs: Any) -> RedisAccountState:
        import redis.asyncio as aioredis

        return cls(RespClient.from_url(url, timeout=2.0), aioredis.Redis.from_url(url), prefix, **kwargs)

    # -- lifecycle --
    async def start(self) -> None:
        """Subscribe and load the shared state before serving (bounded), then keep it current."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._refresh_loop())]
        try:
            await asyncio.wait_for(self._loaded.wait(), START_TIMEOUT)
        except TimeoutError:
            log.warning("account_state_redis_not_loaded", detail="serving from an empty mirror")
            return
        await self._import_seed()

    async def _import_seed(self) -> None:
        """Forwarding phones set while the state lived in this host's file (memory backends) moves
        into a Redis that never held any (its version counter is absent), so switching backends
        keeps it; once Redis has a version, it is the truth and the file is not read again."""
        if not self._seed:
            return
        try:
            if await self._r.call("EXISTS", self._ver_key):
                return
        except UNREACHABLE as exc:
            log.warning("forwarding_import_skipped", error=repr(exc))
            return
        changes = [
            ForwardingChange(a, kind, target)
            for a, kinds in self._seed.items()
            for kind, target in kinds.items()
        ]
        for change in changes:
            self._forwarding.force(change)
            await self._send_forwarding(change)
        log.info("forwarding_imported", entries=len(changes))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._writes:
            await asyncio.wait(self._writes, timeout=2.0)
        try:  # a clean stop: our calls stop counting now, not when the hash expires
            await asyncio.wait_for(
                asyncio.gather(
                    self._r.call("DEL", self._own_key),
                    self._r.call("SREM", self._procs_key, self.process),
                    self._r.call("PUBLISH", self._channel, json.dumps(["d", self.process])),
                ),
                2.0,
            )
        except UNREACHABLE as exc:
            log.warning("account_state_close_failed", error=repr(exc))
        await self._r.close()
        await self._sub.aclose()

    # -- what the call controller reads and reports --
    def calls_of(self, account_id: str) -> int:
        return self._counts.total(account_id)

    def call_started(self, account_id: str) -> None:
        self._write_calls(account_id, self._counts.add(self.process, account_id, 1))

    def call_ended(self, account_id: str) -> None:
        self._write_calls(account_id, self._counts.add(self.process, account_id, -1))

    def overrides(self) -> Overrides:
        return self._forwarding.snapshot()

    def apply_forwarding(self, change: ForwardingChange) -> None:
        self._forwarding.force(change)  # this process's next call sees it at once
        self._watch(asyncio.ensure_future(self._send_forwarding(change)))

    def busy_accounts(self) -> dict[str, int]:
        return self._counts.totals()

    # -- writes --
    def _write_calls(self, account_id: str, calls: int) -> None:
        self._seq += 1
        message = json.dumps(["c", self.process, self._seq, account_id, calls])
        args = (self.process, self._seq, self._ttl_ms, self._channel, account_id, calls, message)
        self._watch(self._eval("calls", (self._own_key, self._procs_key), args), self._after_calls)

    def _after_calls(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._down(exc)
            self._dirty = True
        elif fut.result() == -1:
            self._dirty = True

    async def _send_forwarding(self, change: ForwardingChange) -> None:
        field = json.dumps([change.account_id, change.kind.value])
        try:
            version = await self._r.call("EVAL", _FORWARD, 2, self._fwd_key, self._ver_key, field,
                                         json.dumps(change.target), self._channel)  # fmt: skip
        except UNREACHABLE as exc:
            self._down(exc)
            self._unsent.append(change)
            return
        self._forwarding.apply(change, (int(version), 0))

    async def _write_table(self) -> None:
        self._seq += 1
        table = self._counts.of(self.process)
        message = json.dumps(["t", self.process, self._seq, table])
        flat = [x for account_id, calls in table.items() for x in (account_id, calls)]
        args = (self.process, self._seq, self._ttl_ms, self._channel, message, *flat)
        await self._eval("table", (self._own_key, self._procs_key), args)
        self._dirty = False

    def _eval(self, name: str, keys: tuple[str, ...], args: tuple[Any, ...]) -> Awaitable[Any]:
        """By digest while Redis is up (a NOSCRIPT marks it down: the next refresh loads the
        scripts); by body otherwise."""
        body, sha = _SCRIPTS[name]
        return self._r.call("EVAL" if not self.up else "EVALSHA", body if not self.up else sha, len(keys),
                            *keys, *args)  # fmt: skip

    def _watch(self, aw: Awaitable[Any], done: Any = None) -> None:
        fut = asyncio.ensure_future(aw)
        self._writes.add(fut)
        fut.add_done_callback(self._writes.discard)
        fut.add_done_callback(done or _consume)

    # -- keeping the mirror current --
    async def _listen(self) -> None:
        """Subscribe, then read everything (what changed while not subscribed), then follow."""
        while True:
            pubsub = self._sub.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self._sync()
                self._loaded.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None:
                        self.receive(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(exc)
                await asyncio.sleep(RETRY)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(exc)

    async def _sync(self) -> None:
        """Keep our hash alive (or rewrite it), retry forwarding changes, read everything."""
        if not self.up:
            for body, _ in _SCRIPTS.values():
                await self._r.call("SCRIPT", "LOAD", body)
        if not self._dirty:
            alive = await self._r.call("PEXPIRE", self._own_key, self._ttl_ms)
            await self._r.call("SADD", self._procs_key, self.process)
            self._dirty = not alive
        if self._dirty:
            await self._write_table()
        unsent, self._unsent = self._unsent, []
        for change in unsent:
            await self._send_forwarding(change)
        known = self._counts.counters() - {self.process}
        fwd, members = await asyncio.gather(
            self._r.call("HGETALL", self._fwd_key), self._r.call("SMEMBERS", self._procs_key)
        )
        for field, value in _pairs(fwd).items():
            account_id, kind = json.loads(field)
            version, target = json.loads(value)
            self._forwarding.apply(ForwardingChange(account_id, ForwardKind(kind), target), (version, 0))
        others = sorted({_text(m) for m in members} - {self.process})
        tables = await asyncio.gather(*(self._r.call("HGETALL", self._calls_prefix + p) for p in others))
        dead = []
        for process, reply in zip(others, tables, strict=True):
            table = _pairs(reply)
            if not table:
                dead.append(process)
                continue
            known.discard(process)
            self._take_table(process, int(table.pop("~seq", "0")), table)
        for process in known:  # no longer a member: stopped, or expired and removed by a peer
            self._forget(process)
        for process in dead:
            self._forget(process)
        if dead:
            await self._r.call("SREM", self._procs_key, *dead)
        if not self.up:
            log.info("account_state_redis_up")
        self.up = True

    def receive(self, data: bytes | str) -> None:
        """One published change (see the scripts): ``c`` a count, ``t`` a table, ``d`` a stop,
        ``f`` a forwarding change."""
        try:
            message = json.loads(data)
            kind = message[0]
            if kind == "f":
                _, version, (account_id, fkind), target = message
                self._forwarding.apply(ForwardingChange(account_id, ForwardKind(fkind), target), (version, 0))
                return
            process = message[1]
            if process == self.process:
                return  # our own counts are ours to keep
            if kind == "c":
                _, _, seq, account_id, calls = message
                if seq > self._seqs.get(process, 0) and process not in self._gone:
                    self._seqs[process] = seq
                    self._counts.set(process, account_id, int(calls))
            elif kind == "t":
                self._take_table(process, message[2], message[3])
            elif kind == "d":
                self._forget(process)
                self._gone.add(process)
        except Exception as exc:
            log.warning("account_message_dropped", error=repr(exc))

    def _take_table(self, process: str, seq: int, table: dict[str, Any]) -> None:
        if process in self._gone or seq < self._seqs.get(process, 0):
            return
        self._seqs[process] = seq
        self._counts.replace(process, {a: int(n) for a, n in table.items()})

    def _forget(self, process: str) -> None:
        if process in self._counts.counters():
            self._counts.drop(process)
        self._seqs.pop(process, None)

    def _down(self, exc: BaseException) -> None:
        if self.up:
            log.warning("account_state_redis_down", error=repr(exc))
        self.up = False


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
