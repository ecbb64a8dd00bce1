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

New calls across hosts: each host routes on its mirror, which lags the others by a publication, so
the decisions that must not be taken twice are taken again in Redis, in one Lua step each, before the
call's leg starts (the host turn orders one host's workers, the script orders the hosts): a call
placed is admitted (`admit`, `_ADMIT`: the account's calls over every live process's hash against
``max_calls``, and each call-rate window's calls, the current and previous fixed windows weighted as
routing weighs them, on the entry host's clock), and a capped leg's hold is reserved (`reserve`,
`_RESERVE`: the day's spend + every process's holds against the caps). Either writes this process's
new shares only if within the limits; our shares move here at once and are written absolute with the
sequence number of their message, so a later `_SET_CALLS` of ours (a call's end, a refused call's
rate windows taken back) is ordered after them on the one connection and never fights them. With
Redis unreachable the host's own decision stands (its mirror: a burst split over hosts can then get
one extra call per host).

What is left: a process that lost its subscription sees others' changes only at its next refresh
(what the callee side's busy test and the mirror's first decision read; admissions and holds read
Redis itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import structlog

from registrar.location.resp import UNREACHABLE, RespClient, reply_text
from registrar.location.sentinel import follow, redis_client, subscriber_client
from routing.feature_codes import ForwardingChange
from routing.model import ForwardKind
from routing.state import Overrides
from routing.toll_fraud import Admission
from server.account_state import CallCounts, ForwardingView, HoldCheck, HostPeers, HostTurn, calls_only
from sipcore.waiting import within

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

# KEYS: the bucket's hash, the set of buckets. ARGV: field, delta, ttl ms, channel, bucket -> new total
_ADD_SHARED = """
local v = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], '["s",' .. cjson.encode(ARGV[1]) .. ',' .. v .. ']')
return v
"""
SHARED_TTL_MS = str(3 * 86_400_000)

# The first lines of `_RESERVE` and `_ADMIT`. KEYS[2]: the process set; ARGV[1]: this process, ARGV[4]:
# the prefix of the processes' hashes. total(field, own): ``own`` (this process's share) + every other
# live process's share of ``field`` (an expired hash: a dead host's, counts 0).
_OTHERS = """
local procs = redis.call('SMEMBERS', KEYS[2])
local function total(field, own)
  local n = tonumber(own)
  for _, p in ipairs(procs) do
    if p ~= ARGV[1] then n = n + tonumber(redis.call('HGET', ARGV[4] .. p, field) or '0') end
  end
  return n
end
"""

# The last lines of `_RESERVE` and `_ADMIT`, once their shares are written (``existed``: our hash was
# there before). KEYS[1]: own hash, KEYS[2]: process set; ARGV[1]: process, ARGV[2]: ttl ms, ARGV[5]:
# last seq. 0, or -1 if our hash had expired (the table is rewritten whole).
_WRITTEN = """
if tonumber(ARGV[5]) > tonumber(redis.call('HGET', KEYS[1], '~seq') or '0') then
  redis.call('HSET', KEYS[1], '~seq', ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
if existed == 0 then return -1 end
return 0
"""

# A daily-cap hold, checked and added in one step (the host turn orders one host's workers, this orders
# the hosts). KEYS: own hash, process set, the day's spent bucket. ARGV: process, ttl ms, channel,
# prefix of the processes' hashes, last seq, then per hold: key, spent key, cap (-1: none), this
# process's new share, its message. For each capped hold: the spent total + every other process's
# share (an expired hash: a dead host's, counts 0) + our new share must stay within the cap, else
# nothing is written and the hold's 1-based index returned. Written: 0, or -1 if our hash had expired.
_RESERVE = (
    _OTHERS
    + """
for i = 6, #ARGV, 5 do
  local cap = tonumber(ARGV[i + 2])
  if cap >= 0 then
    local spent = tonumber(redis.call('HGET', KEYS[3], ARGV[i + 1]) or '0')
    if spent + total(ARGV[i], ARGV[i + 3]) > cap then return (i - 1) / 5 end
  end
end
local existed = redis.call('EXISTS', KEYS[1])
for i = 6, #ARGV, 5 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 3])
  redis.call('PUBLISH', ARGV[3], ARGV[i + 4])
end
"""
    + _WRITTEN
)  # a bucket (a day's spend) outlives the day it counts

# A call placed, admitted against its account's limits and counted in one step (the host turn orders
# one host's workers, this orders the hosts; `routing.toll_fraud.Admission.refused` is the same check).
# KEYS: own hash, process set. ARGV: process, ttl ms, channel, prefix of the processes' hashes, last
# seq, max_calls, account, this process's new share of its calls, its message, then per rate window:
# current key, previous key, calls allowed, weight of the previous window, this process's new share of
# the current one, its share of the previous one, the current one's message. Every count is this
# process's share (what it holds now, the new call in it) + every other process's (an expired hash: a
# dead host's, counts 0). Refused: nothing is written, 1 (max_calls) or 2 + the window's index.
# Admitted: the shares written as they are, absolute (as `_SET_CALLS`), and published; 0, or -1 if
# our hash had expired.
_ADMIT = (
    _OTHERS
    + """
if total(ARGV[7], ARGV[8]) > tonumber(ARGV[6]) then return 1 end
for i = 10, #ARGV, 7 do
  local rate = total(ARGV[i + 1], ARGV[i + 5]) * tonumber(ARGV[i + 3]) + total(ARGV[i], ARGV[i + 4])
  if rate > tonumber(ARGV[i + 2]) + 1e-9 then return 2 + (i - 10) / 7 end
end
local existed = redis.call('EXISTS', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[7], ARGV[8])
redis.call('PUBLISH', ARGV[3], ARGV[9])
for i = 10, #ARGV, 7 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 4])
  redis.call('PUBLISH', ARGV[3], ARGV[i + 6])
end
"""
    + _WRITTEN
)

_SCRIPTS = {name: (body, hashlib.sha1(body.encode()).hexdigest()) for name, body in
            (("calls", _SET_CALLS), ("table", _SET_TABLE), ("reserve", _RESERVE),
             ("admit", _ADMIT))}  # fmt: skip


def _pairs(reply: list[Any] | None) -> dict[str, str]:
    items = [reply_text(v) for v in reply or ()]
    return dict(zip(items[::2], items[1::2], strict=True))


def process_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


class RedisAccountState:
    """This process's mirror of the shared account state, and its writes (module docstring)."""

    reserves_holds = True  # across hosts, by the Lua reservation

    def __init__(
        self,
        client: RespClient,
        subscriber: Any,
        prefix: str,
        process: str | None = None,
        ttl: float = TTL,
        refresh_interval: float = REFRESH_INTERVAL,
        seed: Overrides | None = None,
        host: HostPeers | None = None,
    ) -> None:
        self._r = client
        # the other workers of this host (several workers on Redis): our count changes also go to them
        # on the worker channel, at once inside `exclusive`, so a new call's limits are decided as
        # exactly as with memory replicas; other hosts learn them through Redis
        self._host_publish = host.publish if host is not None else None
        self._turn = HostTurn(host.lock_path, host.drain) if host is not None else None
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
        # shared tallies: durable totals in Redis (``<prefix>shared:<bucket>`` hashes), mirrored
        self._shared: dict[str, int] = {}
        self._shared_unsent: dict[tuple[str, str], int] = {}  # (bucket, key) -> delta Redis did not take
        self._shared_prefix = f"{prefix}shared:"
        self._buckets_key = f"{prefix}shared"
        self._writes: set[asyncio.Future[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._loaded = asyncio.Event()
        self.up = False

    @classmethod
    def from_url(
        cls, url: str, prefix: str, sentinels: tuple[str, ...] = (), sentinel_master: str = "mymaster",
        **kwargs: Any,
    ) -> RedisAccountState:  # fmt: skip
        """``sentinels``: reach the master a Redis Sentinel names, followed across failovers (the
        commands through `SentinelClient`, the subscription through redis-py's own Sentinel)."""
        client = redis_client(url, sentinels, sentinel_master, timeout=2.0)
        return cls(client, subscriber_client(url, sentinels, sentinel_master), prefix, **kwargs)

    # -- lifecycle --
    async def start(self) -> None:
        """Subscribe and load the shared state before serving (bounded), then keep it current."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._refresh_loop())]
        try:
            await within(self._loaded.wait(), START_TIMEOUT)
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
            await within(
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
        if self._turn is not None:
            self._turn.close()

    # -- what the call controller reads and reports --
    def calls_of(self, account_id: str) -> int:
        return self._counts.total(account_id)

    def call_started(self, account_id: str) -> None:
        self._write_calls(account_id, 1)

    def call_ended(self, account_id: str) -> None:
        self._write_calls(account_id, -1)

    def overrides(self) -> Overrides:
        return self._forwarding.snapshot()

    def apply_forwarding(self, change: ForwardingChange) -> None:
        self._forwarding.force(change)  # this process's next call sees it at once
        self._watch(asyncio.ensure_future(self._send_forwarding(change)))

    def busy_accounts(self) -> dict[str, int]:
        return calls_only(self._counts.totals())

    def tally(self, key: str) -> int:
        return self._counts.total(key) + self._shared.get(key, 0)

    def add_tally(self, key: str, delta: int) -> int:
        return self._write_calls(key, delta)  # the same hash, script and publication as a call count

    def add_shared(self, key: str, delta: int, bucket: str) -> None:
        """Add to a durable total (``delta`` >= 0): it stays in Redis when this process stops, for
        three days after its bucket's last write. Seen here at once, elsewhere when published."""
        self._shared[key] = self._shared.get(key, 0) + delta
        self._watch(self._send_shared(bucket, key, delta))

    def drop_shared(self, key: str) -> None:
        return None  # the bucket expires by itself

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        # the workers of this host one at a time; other hosts: the publication window (docstring)
        return self._turn.turn() if self._turn is not None else contextlib.nullcontext()

    async def claim(self, key: str, bucket: str) -> bool:
        """True for the one process that first adds 1 to ``key`` (a marker), whoever asks at once."""
        try:
            total = await self._eval_shared(bucket, key, 1)
        except UNREACHABLE as exc:
            self._down(exc)
            return False
        self._take_shared(key, int(total))
        return int(total) == 1

    def reserve(self, holds: Sequence[HoldCheck], delta: int, bucket: str) -> Awaitable[int]:
        """Hosts decide on their own mirrors, which lag by a publication: the hold is checked against
        the caps in Redis and added in one step (`_RESERVE`). Our share moves here at once, granted
        or not (the write that carries it is ordered after our earlier ones, every write of ours being
        absolute): a refused hold is taken back with its call's end, as a granted one, so our share
        never counts it twice or not at all; until then only this process counts it (not Redis)."""
        args: list[Any] = []
        for key, spent_key, cap in holds:
            share, message = self._move_share(key, delta)
            args += (key, spent_key, -1 if cap is None else cap, share, message)
        keys = (self._own_key, self._procs_key, self._shared_prefix + bucket)
        return self._reserved(self._eval("reserve", keys, (*self._script_head(), *args)))

    def admit(self, admission: Admission) -> Awaitable[int]:
        """Hosts decide on their own mirrors, which lag by a publication: the call is checked against
        the account's ``max_calls`` and rate windows in Redis and counted in one step (`_ADMIT`), as a
        hold is (`reserve`, the same reasons): our shares move here at once, the account's is taken
        back with the call's end, a refused call's rate windows once refused."""
        account = admission.account_id
        share, message = self._move_share(account, 1)
        args: list[Any] = [admission.max_calls, account, share, message]
        own = self._counts.own
        for r in admission.rates:
            current, message = self._move_share(r.current, 1)
            args += (r.current, r.previous, r.limit.calls, repr(r.weight), current,
                     own(self.process, r.previous), message)  # fmt: skip
        sent = self._eval("admit", (self._own_key, self._procs_key), (*self._script_head(), *args))
        return self._admitted(sent, admission.placed)

    def _script_head(self) -> tuple[Any, ...]:
        """The arguments `_ADMIT` and `_RESERVE` start with (after the shares moved: the last seq)."""
        return (self.process, self._ttl_ms, self._channel, self._calls_prefix, self._seq)

    def _move_share(self, key: str, delta: int) -> tuple[int, str]:
        """Move our share of ``key`` here, tell this host's other workers at once; (new share, the
        message that publishes it through Redis once written)."""
        share = self._counts.add(self.process, key, delta)
        self._seq += 1
        message = json.dumps(["c", self.process, self._seq, key, share])
        if self._host_publish is not None:  # the message Redis publishes too: the first copy (by seq) wins
            self._host_publish(message.encode(), self._turn is not None and self._turn.inside)
        return share, message

    async def _reserved(self, sent: Awaitable[Any]) -> int:
        try:
            refused = int(await sent)
        except UNREACHABLE as exc:  # Redis away: decided on the mirror, as every other limit then
            self._down(exc)
            self._dirty = True  # our table, what it asked in it, is rewritten at the next refresh
            return 0
        if refused == -1:
            self._dirty = True
        return max(refused, 0)

    async def _admitted(self, sent: Awaitable[Any], placed: tuple[str, ...]) -> int:
        refused = await self._reserved(sent)
        if refused:  # not placed: out of the rate windows (written absolute, after the refusal)
            for key in placed:
                self.add_tally(key, -1)
        return refused

    async def _send_shared(self, bucket: str, key: str, delta: int) -> None:
        try:
            total = await self._eval_shared(bucket, key, delta)
        except UNREACHABLE as exc:
            self._down(exc)
            slot = (bucket, key)
            self._shared_unsent[slot] = self._shared_unsent.get(slot, 0) + delta  # retried at refresh
            return
        self._take_shared(key, int(total))

    def _eval_shared(self, bucket: str, key: str, delta: int) -> Awaitable[Any]:
        return self._r.call("EVAL", _ADD_SHARED, 2, self._shared_prefix + bucket, self._buckets_key, key,
                            delta, SHARED_TTL_MS, self._channel, bucket)  # fmt: skip

    def _take_shared(self, key: str, total: int) -> None:
        """Totals only grow: an older answer or read never takes back a newer one."""
        pending = sum(d for (_, k), d in self._shared_unsent.items() if k == key)
        self._shared[key] = max(self._shared.get(key, 0), total + pending)

    # -- writes --
    def _write_calls(self, key: str, delta: int) -> int:
        """Move our share of ``key`` by ``delta`` and write it (absolute); the new share."""
        share, message = self._move_share(key, delta)
        args = (self.process, self._seq, self._ttl_ms, self._channel, key, share, message)
        self._watch(self._eval("calls", (self._own_key, self._procs_key), args), self._after_calls)
        return share

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
        await follow(self._sub, self._channel, self._subscribed, self.receive, self._down, retry=RETRY)

    async def _subscribed(self) -> None:
        await self._sync()
        self._loaded.set()

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
        await self._sync_shared()
        known = self._counts.counters() - {self.process}
        fwd, members = await asyncio.gather(
            self._r.call("HGETALL", self._fwd_key), self._r.call("SMEMBERS", self._procs_key)
        )
        for field, value in _pairs(fwd).items():
            account_id, kind = json.loads(field)
            version, target = json.loads(value)
            self._forwarding.apply(ForwardingChange(account_id, ForwardKind(kind), target), (version, 0))
        others = sorted({reply_text(m) for m in members} - {self.process})
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

    async def _sync_shared(self) -> None:
        """Send what Redis did not take, then read every bucket's totals."""
        unsent, self._shared_unsent = self._shared_unsent, {}
        for (bucket, key), delta in unsent.items():
            try:
                total = await self._eval_shared(bucket, key, delta)
            except UNREACHABLE:
                self._shared_unsent[(bucket, key)] = self._shared_unsent.get((bucket, key), 0) + delta
                raise
            self._take_shared(key, int(total))
        buckets = sorted(reply_text(b) for b in await self._r.call("SMEMBERS", self._buckets_key) or ())
        replies = await asyncio.gather(*(self._r.call("HGETALL", self._shared_prefix + b) for b in buckets))
        fresh: dict[str, int] = {}
        for bucket, reply in zip(buckets, replies, strict=True):
            table = _pairs(reply)
            if not table:
                await self._r.call("SREM", self._buckets_key, bucket)
            fresh.update({k: int(v) for k, v in table.items()})
        pending = {k for _, k in self._shared_unsent}
        self._shared = {k: v for k, v in self._shared.items() if k in fresh or k in pending}
        for key, total in fresh.items():
            self._take_shared(key, total)

    def receive(self, data: bytes | str) -> None:
        """One published change (see the scripts): ``c`` a count, ``t`` a table, ``d`` a stop,
        ``f`` a forwarding change, ``s`` a shared total."""
        try:
            message = json.loads(data)
            kind = message[0]
            if kind == "s":
                self._take_shared(str(message[1]), int(message[2]))
                return
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
