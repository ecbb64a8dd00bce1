"""The brute-force guard made the whole platform's: an adapter over Redis for several hosts.

With several hosts (``server.cluster``) sharing Redis (``registrar.location.backend: redis``), a
password guesser would otherwise get each host's thresholds: N hosts, N times the guesses. Each
process keeps its own pure `registrar.guard.Guard` (built with ``share=True``) and one of these, built
with its Redis client (`RespClient`, through Sentinel when configured) and a pub/sub subscriber:

- **failures and logins** the guard queued (``take_shared``, the same events `server.guard_share`
  sends to this host's other workers) are published on ``<prefix>events`` after each decision, tagged
  with this host's id; every process of the other hosts counts them (``record_peer_failure``,
  ``record_peer_success``: counted, never banning), so a source's and a username's thresholds
  (hence the *under attack* state) hold for the sum of every host's failures. A process ignores its
  own host's publications: its workers already have them over the worker channel;
- **bans**, stored in the sorted set ``<prefix>bans`` (member: the source key; score: the ban's end,
  in ms on Redis's clock, ``TIME``), published in the same Lua step (`_BAN`, which keeps a longer ban
  rather than shortening it, and publishes only what it stored). They travel as the ban's remaining
  milliseconds, so hosts' clocks need not agree. Every process of every other host installs them
  (``install_ban``) unless the source is exempt here (whitelist, a trunk's network); the host's
  authority worker for the source (``server.guard_share.authority``) logs it ``source_banned`` with
  ``origin``, the deciding host, and counts it in ``sipcore_bans_received_total``, so each host's
  journal (its fail2ban) sees each ban once, and ``sipcore_bans_total`` summed over the hosts counts
  it once;
- at start, after every reconnection, and every ``RESYNC`` seconds (redis-py may re-establish a
  lost subscription by itself, and what was published meanwhile is lost), the bans still in force
  are read from the set and installed (a host that restarts, or joins, holds them too).

Nothing here is on the message path: the guard's decisions stay synchronous and local; writes are
sent and not awaited. While Redis is unreachable each host keeps its own guard (what it did before
this adapter): failures are not sent (counted in ``unsent``), bans wait in a bounded table and are
stored and published once the subscription is back. What is not exact: a failure reaches the other
hosts one Redis round trip later (well under a millisecond on a LAN), so a burst spread over N hosts
can pass a threshold by the failures in flight; two hosts banning one source in that moment each log
and count their own ban.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgpack
import structlog

from registrar.guard import BanReason, Guard, IpBanned
from registrar.location.resp import UNREACHABLE, RespClient, reply_text
from registrar.location.sentinel import follow, redis_client, subscriber_client
from sipcore.waiting import within

log = structlog.get_logger("sipcore.registrar")

START_TIMEOUT = 2.0  # at most this long before serving (Redis down: serve with this host's guard)
RETRY = 1.0  # between subscription attempts; also how often bans Redis did not take are retried
RESYNC = 30.0  # the bans in force read again (a subscription redis-py re-established missed some)
MAX_UNSENT = 4096  # bans waiting for Redis (beyond: the oldest is dropped, counted)

Report = Callable[[IpBanned, str, str], None]  # a ban another host decided: (ban, method, origin)

# KEYS: the ban set. ARGV: source key, ban ms, max bans, channel, message. 1: stored and published;
# 0: a ban as long or longer was there (nothing published).
_BAN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local finish = now + tonumber(ARGV[2])
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0') >= finish then return 0 end
redis.call('ZADD', KEYS[1], finish, ARGV[1])
local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if extra > 0 then redis.call('ZPOPMIN', KEYS[1], extra) end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# KEYS: the ban set. -> source key, remaining ms, ... for every ban in force
_LOAD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #found, 2 do
  out[#out + 1] = found[i]
  out[#out + 1] = tonumber(found[i + 1]) - now
end
return out
"""


def _never(_: str) -> bool:
    return False


def _always(_: str) -> bool:
    return True


class RedisGuardShare:
    """One process's end of the platform's guard: ``send`` the guard's queued events, ``announce`` a
    ban; what the other hosts publish is applied as it comes (module docstring)."""

    def __init__(
        self,
        client: RespClient,
        subscriber: Any,
        prefix: str,
        host: str,
        guard: Callable[[], Guard | None],
        report: Report,
        *,
        exempt: Callable[[str], bool] | None = None,
        reports: Callable[[str], bool] = _always,
        max_bans: int = 65_536,
    ) -> None:
        """``host``: this host's id (every worker of it gives the same); ``guard``: the registrar's
        current guard (a reload builds a new one); ``report``: log and count a ban another host
        decided, called when ``reports(source)`` (this host's authority worker for the source);
        ``exempt(address)``: never install a ban of it here (a trunk's; None: none)."""
        self._r = client
        self._sub = subscriber  # redis.asyncio.Redis: RespClient has no pub/sub
        self._bans_key = f"{prefix}bans"
        self._channel = f"{prefix}events"
        self.host = host
        self._guard = guard
        self._report = report
        self._exempt = exempt or _never
        self._reports = reports
        self._max_bans = str(max_bans)
        self._unsent: OrderedDict[str, tuple[IpBanned, str]] = OrderedDict()  # source -> (ban, method)
        self._writes: set[asyncio.Future[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self._check = self._resync = 0.0  # loop times of the next look and the next re-read (_idle)
        self.up = False
        self.received = 0  # events applied from other hosts
        self.installed = 0  # bans new here (published or loaded)
        self.malformed = 0
        self.unsent = 0  # failures and logins not sent (Redis away), bans dropped from the wait table

    @classmethod
    def from_location(cls, loc: Any, host: str, guard: Callable[[], Guard | None], report: Report,
                      **kwargs: Any) -> RedisGuardShare:  # fmt: skip
        """Built on ``registrar.location`` (``url``, ``key_prefix``, ``sentinels``): the Redis the
        hosts already share; keys and channel under ``<key_prefix>guard:``."""
        sentinels = tuple(loc.sentinels)
        client = redis_client(loc.url, sentinels, loc.sentinel_master, timeout=2.0)
        subscriber = subscriber_client(loc.url, sentinels, loc.sentinel_master)
        prefix = loc.key_prefix.rstrip(":") + ":guard:"
        return cls(client, subscriber, prefix, host, guard, report, **kwargs)

    # -- lifecycle --
    async def start(self) -> None:
        """Subscribe and install the bans in force before serving (bounded), then keep following."""
        self._task = asyncio.get_running_loop().create_task(self._listen())
        try:
            await within(self._loaded.wait(), START_TIMEOUT)
        except TimeoutError:
            log.warning("guard_redis_not_loaded", detail="serving with this host's guard alone")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._writes:
            await asyncio.wait(self._writes, timeout=2.0)
        await self._r.close()
        await self._sub.aclose()

    # -- out --
    def send(self, events: list[tuple[Any, ...]]) -> None:
        """The failures and logins the guard queued (``take_shared``), to the other hosts."""
        if not events:
            return
        if not self.up:
            self.unsent += len(events)
            return
        payload = msgpack.packb([self.host, [[e[0], e[1], e[2]] for e in events]])
        self._watch(self._r.call("PUBLISH", self._channel, payload))

    def announce(self, ban: IpBanned, method: str) -> None:
        """A ban this host decided: stored with its expiry and published (after the failures sent
        before it: one connection, in order); kept for later while Redis is away."""
        if not self.up:
            self._keep(ban, method)
            return
        self._watch(self._store(ban, method))

    async def _store(self, ban: IpBanned, method: str) -> None:
        remaining = int((ban.until - time.time()) * 1000)
        if remaining <= 0:
            return
        message = msgpack.packb(
            [self.host, [["b", ban.source, remaining, ban.reason.value, ban.username, method]]]
        )
        try:
            await self._r.call("EVAL", _BAN, 1, self._bans_key, ban.source, remaining, self._max_bans,
                               self._channel, message)  # fmt: skip
        except UNREACHABLE as exc:
            self._down(exc)
            self._keep(ban, method)

    def _keep(self, ban: IpBanned, method: str) -> None:
        unsent = self._unsent
        unsent.pop(ban.source, None)
        unsent[ban.source] = (ban, method)
        if len(unsent) > MAX_UNSENT:
            unsent.popitem(last=False)
            self.unsent += 1

    def _flush(self) -> None:
        """Store and publish the bans Redis did not take (those still in force)."""
        now = time.time()
        unsent, self._unsent = self._unsent, OrderedDict()
        for ban, method in unsent.values():
            if ban.until > now:
                self._watch(self._store(ban, method))

    def _watch(self, aw: Any) -> None:
        fut = asyncio.ensure_future(aw)
        self._writes.add(fut)
        fut.add_done_callback(self._written)

    def _written(self, fut: asyncio.Future[Any]) -> None:
        self._writes.discard(fut)
        if not fut.cancelled() and (exc := fut.exception()) is not None:
            self._down(exc)  # a failure or login lost; a ban was kept by `_store`

    # -- in --
    async def _listen(self) -> None:
        """Subscribe, install the bans in force (what was published while not subscribed), send
        what waited, then follow; on any error, again after ``RETRY``."""
        await follow(self._sub, self._channel, self._subscribed, self.receive, self._down,
                     retry=RETRY, tick=RETRY, idle=self._idle)  # fmt: skip

    async def _subscribed(self) -> None:
        await self._ready()
        now = asyncio.get_running_loop().time()
        self._check, self._resync = now + RETRY, now + RESYNC

    async def _idle(self) -> None:
        """Every ``RETRY``: the bans in force read again after a failed write or every ``RESYNC``;
        else what waited for Redis sent."""
        now = asyncio.get_running_loop().time()
        if now < self._check:
            return
        self._check = now + RETRY
        if not self.up or now >= self._resync:
            self._resync = now + RESYNC
            await self._ready()
        elif self._unsent:
            self._flush()

    async def _ready(self) -> None:
        await self._load()
        if not self.up:
            log.info("guard_redis_up")
        self.up = True
        self._loaded.set()
        self._flush()

    async def _load(self) -> None:
        reply = await self._r.call("EVAL", _LOAD, 1, self._bans_key)
        guard = self._guard()
        if guard is None or not reply:
            return
        now = time.time()
        fresh = 0
        for source, remaining in zip(reply[::2], reply[1::2], strict=True):
            key = reply_text(source)
            if not self._exempted(guard, key) and guard.install_ban(key, now + int(remaining) / 1000, now):
                fresh += 1
        self.installed += fresh
        if fresh:
            log.info("guard_bans_loaded", bans=fresh)

    def receive(self, data: bytes) -> None:
        """One publication of another host; never raises (a bad one is counted and dropped)."""
        guard = self._guard()
        if guard is None:
            return
        try:
            origin, events = msgpack.unpackb(data)
            if not isinstance(events, list):
                raise ValueError("not a list")
        except Exception:
            self.malformed += 1
            log.warning("guard_redis_message_dropped", size=len(data))
            return
        if origin == self.host:
            return  # ours: this host's workers have it over the worker channel
        now = time.time()
        for event in events:
            try:
                self._apply(guard, str(origin), event, now)
            except Exception:  # one bad event alone is lost
                self.malformed += 1
                log.warning("guard_redis_event_dropped", detail=str(event)[:200])

    def _apply(self, guard: Guard, origin: str, event: Any, now: float) -> None:
        kind = event[0]
        self.received += 1
        if kind == "f":
            guard.record_peer_failure(str(event[1]), event[2], now)
        elif kind == "s":
            guard.record_peer_success(str(event[1]), event[2], now)
        elif kind == "b":
            source, remaining, reason, username, method = event[1:6]
            source = str(source)
            if self._exempted(guard, source):
                return
            until = now + int(remaining) / 1000
            if guard.install_ban(source, until, now):
                self.installed += 1
                if self._reports(source):
                    self._report(IpBanned(source, until, BanReason(reason), username), str(method), origin)
        else:
            raise ValueError(f"unknown guard event {kind!r}")

    def _exempted(self, guard: Guard, source: str) -> bool:
        """Whitelisted here, or a trunk's (an IPv6 /64 key: its first address is asked)."""
        address = source.split("/", 1)[0]
        return guard.is_whitelisted(address) or self._exempt(address)

    def _down(self, exc: BaseException) -> None:
        if self.up:
            log.warning("guard_redis_down", error=repr(exc))
        self.up = False
