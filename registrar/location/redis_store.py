"""Shared location store on Redis: several processes and hosts see one registry.

Layout under ``prefix`` (default "sipcore:loc"):
- ``{p}:aor:{aor}`` — a hash per AOR: field = binding key, value = msgpack binding (`codec`), plus a
  ``_v`` version token. The key's TTL is the AOR's latest expiry + ``ttl_margin``, so Redis drops an
  AOR whose bindings all expired with no sweeper. Reads filter by the caller's logical ``now``, so an
  expired binding kept until its siblings' TTL (or within the margin) is never returned.
- ``{p}:flow:{connection_id}`` — a set of AORs with a binding on that TCP connection (same TTL rule).
- ``{p}:aors`` / ``{p}:contacts`` — sorted sets scored by expiry, for the count gauges; pruned of
  expired members on every write.

Atomic per AOR by optimistic concurrency, in one round trip when this process guessed the AOR's state:
`apply` runs the same pure `plan_register` as the memory backend over the state it last saw for the AOR
(a bounded per-process cache; an unknown AOR is assumed absent), then one Lua compare-and-set writes
the changed bindings only if ``_v`` is still the version planned from. If it is not, the script returns
the current hash in the same round trip and `apply` plans again. The cache is only a guess: nothing is
answered from it without that version check, and a refusal planned from it (stale CSeq, too many
contacts) is re-planned from a fresh read before it is reported. The version is a random token, so an
AOR deleted and re-created in between cannot be mistaken for the one planned from. Phones refresh
through the process that registered them (SO_REUSEPORT hashes a source address to one process), so a
refresh is usually one round trip. Not for Redis Cluster (the script touches several keys).

The client is `resp.RespClient` (one pipelined connection, hiredis parsing): redis-py cost ~3x more
client CPU per command (see benchmarks/results/location.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import random
import time
from typing import Any

from registrar.location import codec
from registrar.location.binding import Binding, ordered
from registrar.location.changes import OverflowPolicy, RegisterChanges
from registrar.location.errors import ContentionError, LocationError
from registrar.location.events import BindingRefreshed, LocationEvent
from registrar.location.merge import merge_written_back
from registrar.location.resp import RedisReplyError, RespClient
from registrar.location.rules import ApplyResult, plan_flow_closed, plan_register

_VERSION = b"_v"

# KEYS: 1 AOR hash, 2 aors zset, 3 contacts zset, 4.. flow sets to add the AOR to
# ARGV: 1 expected version ("" = absent), 2 new version ("" = only check the version),
#       3 ttl ms (0: keep the current TTL; -1: no binding left, delete the AOR), 4 aor,
#       5 latest expiry, 6 now (prune scores <= now; "-inf": no pruning), 7 n,
#       then n x (field, value, expires_at) written, then the fields to delete
# Returns 1 when applied, else the current hash (HGETALL) so the caller can plan again at once.
_CAS = """
local cur = redis.call('HGET', KEYS[1], '_v') or ''
if cur ~= ARGV[1] then return redis.call('HGETALL', KEYS[1]) end
if ARGV[2] == '' then return 1 end
local aor = ARGV[4]
local ttl = tonumber(ARGV[3])
local n = tonumber(ARGV[7])
local first_removed = 8 + 3 * n
if first_removed <= #ARGV then
  local fields, members = {}, {}
  for i = first_removed, #ARGV do
    fields[#fields + 1] = ARGV[i]
    members[#members + 1] = aor .. '\\n' .. ARGV[i]
  end
  redis.call('HDEL', KEYS[1], unpack(fields))
  redis.call('ZREM', KEYS[3], unpack(members))
end
if ttl < 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], aor)
else
  local h, z = {'_v', ARGV[2]}, {}
  for i = 8, first_removed - 1, 3 do
    h[#h + 1] = ARGV[i]
    h[#h + 1] = ARGV[i + 1]
    z[#z + 1] = ARGV[i + 2]
    z[#z + 1] = aor .. '\\n' .. ARGV[i]
  end
  redis.call('HSET', KEYS[1], unpack(h))
  if n > 0 then redis.call('ZADD', KEYS[3], unpack(z)) end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else ttl = redis.call('PTTL', KEYS[1]) end
  redis.call('ZADD', KEYS[2], ARGV[5], aor)
  for k = 4, #KEYS do
    redis.call('SADD', KEYS[k], aor)
    if redis.call('PTTL', KEYS[k]) < ttl then redis.call('PEXPIRE', KEYS[k], ttl) end
  end
end
if ARGV[6] ~= '-inf' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[6])
end
return 1
"""
_CAS_SHA = hashlib.sha1(_CAS.encode()).hexdigest()

# What this process last saw of an AOR: (version, field -> binding). Fresh = just read from Redis.
_State = tuple[bytes, dict[str, Binding]]


class RedisLocationStore:
    def __init__(
        self,
        client: RespClient,
        *,
        prefix: str = "sipcore:loc",
        ttl_margin: float = 5.0,
        max_retries: int = 50,
        cache_size: int = 50_000,
        owns_client: bool = False,
    ) -> None:
        """``ttl_margin`` covers clock skew between hosts: keys outlive their latest expiry by it.
        ``cache_size`` bounds the AORs whose last seen state is kept to skip a read (0: always read)."""
        self._r = client
        self.prefix = prefix
        self.ttl_margin = ttl_margin
        self.max_retries = max_retries
        self.cache_size = cache_size
        self._owns = owns_client
        self._aors_key = f"{prefix}:aors"
        self._contacts_key = f"{prefix}:contacts"
        self._aor_prefix = f"{prefix}:aor:"
        self._cache: dict[str, _State] = {}

    @classmethod
    def from_url(cls, url: str = "redis://127.0.0.1:6379/0", **kwargs: Any) -> RedisLocationStore:
        return cls(RespClient.from_url(url), owns_client=True, **kwargs)

    def _flow_key(self, connection_id: str) -> str:
        return f"{self.prefix}:flow:{connection_id}"

    async def get(self, aor: str, now: float) -> list[Binding]:
        version, stored = await self._read(aor)
        if aor in self._cache:
            self._remember(aor, version, stored)
        return list(ordered([b for b in stored.values() if b.expires_at > now]))

    def lookup_cached(self, aor: str, now: float) -> None:
        """`LocationStore.lookup_cached`: always None (ask `get`). The cache holds what this process
        last saw of an AOR, a guess `apply` confirms against ``_v`` before answering anything from
        it; another process or host may have written the AOR since, and nothing tells this one (no
        invalidation), so only a read from Redis can vouch for the bindings."""
        return None

    def apply_now(self, aor: str, changes: Any, now: float, max_contacts: int | None = None,
                  policy: Any = None) -> None:  # fmt: skip
        """`LocationStore.apply_now`: the registry is in Redis, so never here."""
        return None

    def remove_flow_now(self, connection_id: str) -> None:
        return None

    async def open(self, now: float) -> int:
        """Nothing to restore: Redis keeps the registry."""
        return 0

    async def apply(
        self,
        aor: str,
        changes: RegisterChanges,
        now: float,
        max_contacts: int | None = None,
        policy: OverflowPolicy = OverflowPolicy.REJECT,
    ) -> ApplyResult:
        version, stored = self._cache.pop(aor, None) or (b"", {})
        fresh = False
        conflicts = 0
        while True:
            try:
                result = plan_register(aor, tuple(stored.values()), changes, now, max_contacts, policy)
            except LocationError:
                if fresh:
                    self._remember(aor, version, stored)
                    raise
                version, stored = await self._read(aor)  # refused on a guess: ask Redis
                fresh = True
                continue
            unchanged = not result.events and len(result.bindings) == len(stored)
            if unchanged and fresh:
                self._remember(aor, version, stored)
                return result
            current = await self._write(
                aor, version, stored, result.bindings, now, result.events, check_only=unchanged
            )
            if current is None:
                return result
            if fresh:  # a real race with another writer, not a stale guess
                conflicts += 1
                if conflicts >= self.max_retries:
                    raise ContentionError(f"{aor}: gave up after {self.max_retries} concurrent updates")
                await _backoff(conflicts)
            version, stored = current
            fresh = True

    async def write_back(
        self, aor: str, written: dict[str, Binding], removed: dict[str, float], now: float
    ) -> tuple[Binding, ...]:
        """Fold what a process registered for ``aor`` while Redis was away into what Redis holds now
        (`merge.merge_written_back`, newest registration wins), by the same compare-and-set as `apply`.
        Returns the AOR's bindings as written."""
        version, stored = await self._read(aor)
        for attempt in range(self.max_retries):
            if attempt:
                await _backoff(attempt)
            merged = merge_written_back(stored.values(), written, removed, now)
            keep = {id(b) for b in stored.values()}
            if len(merged) == len(stored) and all(id(b) in keep for b in merged):
                return merged  # Redis already holds it (written before the connection dropped)
            current = await self._write(aor, version, stored, merged, now)
            if current is None:
                return merged
            version, stored = current
        raise ContentionError(f"{aor}: gave up writing back after {self.max_retries} concurrent updates")

    async def ping(self) -> None:
        """Raise unless Redis answers (the fallback's probe while it is away)."""
        await self._r.call("PING")

    async def remove_flow(self, connection_id: str) -> list[LocationEvent]:
        flow_key = self._flow_key(connection_id)
        aors = [a.decode() for a in await self._r.call("SMEMBERS", flow_key)]
        per_aor = await asyncio.gather(*(self._close_flow(aor, connection_id) for aor in aors))
        await self._r.call("DEL", flow_key)
        return [e for events in per_aor for e in events]

    async def _close_flow(self, aor: str, connection_id: str) -> list[LocationEvent]:
        version, stored = await self._read(aor)
        for attempt in range(self.max_retries):
            if attempt:
                await _backoff(attempt)
            kept, events = plan_flow_closed(tuple(stored.values()), connection_id)
            if not events:
                return []
            current = await self._write(aor, version, stored, kept, None)
            if current is None:
                return list(events)
            version, stored = current
        raise ContentionError(f"{aor}: gave up closing flow {connection_id}")

    async def expire(self, now: float) -> list[Binding]:
        """Redis expires bindings by TTL and reads filter by ``now``: nothing to sweep or report here.
        Prunes the count indexes only."""
        await asyncio.gather(
            self._r.call("ZREMRANGEBYSCORE", self._aors_key, "-inf", repr(now)),
            self._r.call("ZREMRANGEBYSCORE", self._contacts_key, "-inf", repr(now)),
        )
        return []

    async def count_aors(self, now: float | None = None) -> int:
        return await self._r.call("ZCOUNT", self._aors_key, f"({_now(now)!r}", "+inf")

    async def count_contacts(self, now: float | None = None) -> int:
        return await self._r.call("ZCOUNT", self._contacts_key, f"({_now(now)!r}", "+inf")

    async def close(self) -> None:
        self._cache.clear()
        if self._owns:
            await self._r.close()

    # -- internals ----------------------------------------------------------------------------------

    async def _read(self, aor: str) -> _State:
        """The AOR's hash; a read is safe to repeat, so a connection lost on the way is tried once more."""
        key = self._aor_prefix + aor
        try:
            raw = await self._r.call("HGETALL", key)
        except ConnectionError:
            raw = await self._r.call("HGETALL", key)
        return _decode(aor, raw)

    def _remember(self, aor: str, version: bytes, stored: dict[str, Binding]) -> None:
        cache = self._cache
        cache.pop(aor, None)
        if not version or not self.cache_size:
            return  # absent is what an unknown AOR is assumed to be anyway
        if len(cache) >= self.cache_size:
            del cache[next(iter(cache))]  # least recently used: entries are re-inserted on use
        cache[aor] = (version, stored)

    async def _write(
        self,
        aor: str,
        version: bytes,
        stored: dict[str, Binding],
        bindings: tuple[Binding, ...],
        now: float | None,
        events: tuple[LocationEvent, ...] = (),
        check_only: bool = False,
    ) -> _State | None:
        """Compare-and-set the AOR from ``stored`` (at ``version``) to ``bindings``, sending only the
        bindings that changed. None when done, else the AOR's current state to plan again from.
        ``now`` None (no logical clock, e.g. a flow closed): keep the key's TTL — the remaining
        bindings expire no later — and skip index pruning. ``check_only``: write nothing, only
        confirm that ``version`` is current."""
        key = self._aor_prefix + aor
        if check_only:
            reply = await self._eval(
                (key, self._aors_key, self._contacts_key), (version, "", 0, aor, 0, "-inf", 0)
            )
            if reply == 1:
                self._remember(aor, version, stored)
                return None
            return _from_reply(aor, reply)

        field_of = {id(b): f for f, b in stored.items()}  # unchanged bindings are the same objects
        for ev in events:  # a refresh keeps its field: no need to canonicalise the Contact again
            if isinstance(ev, BindingRefreshed) and id(ev.previous) in field_of:
                field_of[id(ev.binding)] = field_of[id(ev.previous)]
        after: dict[str, Binding] = {}
        written: list[Any] = []
        flow_keys = set()
        latest = 0.0
        for b in bindings:
            latest = max(latest, b.expires_at)
            field = field_of.get(id(b))
            if field is None or b is not stored.get(field):
                field = field or b.key
                written += (field, codec.encode(b), repr(b.expires_at))
                if b.flow.connection_id is not None and b.flow_alive:
                    flow_keys.add(self._flow_key(b.flow.connection_id))
            after[field] = b
        removed = [f for f in stored if f not in after]
        if not bindings:
            ttl_ms = -1
        elif now is None:
            ttl_ms = 0
        else:
            ttl_ms = max(1, math.ceil((latest - now + self.ttl_margin) * 1000))
        new_version = os.urandom(8).hex().encode()
        args = (version, new_version, ttl_ms, aor, repr(latest), "-inf" if now is None else repr(now))
        keys = (key, self._aors_key, self._contacts_key, *sorted(flow_keys))
        reply = await self._eval(keys, (*args, len(written) // 3, *written, *removed))
        if reply == 1:
            self._remember(aor, new_version if bindings else b"", after)
            return None
        return _from_reply(aor, reply)

    async def _eval(self, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        try:
            return await self._r.call("EVALSHA", _CAS_SHA, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # Redis restarted or its script cache was flushed: the script did not run, so send it again.
        await self._r.call("SCRIPT", "LOAD", _CAS)
        return await self._r.call("EVALSHA", _CAS_SHA, len(keys), *keys, *args)


def _decode(aor: str, raw: list[bytes]) -> _State:
    """A flat HGETALL reply [field, value, ...] -> (version, field -> binding)."""
    version = b""
    stored: dict[str, Binding] = {}
    for i in range(0, len(raw), 2):
        field = raw[i]
        if field == _VERSION:
            version = raw[i + 1]
        else:
            stored[field.decode()] = codec.decode(aor, raw[i + 1])
    return version, stored


def _from_reply(aor: str, reply: Any) -> _State:
    if not isinstance(reply, list):
        raise RedisReplyError(f"unexpected reply from the location script: {reply!r}")
    return _decode(aor, reply)


async def _backoff(attempt: int) -> None:
    """Jittered pause after losing a compare-and-set, so racing writers spread out (≤ ~2 ms each)."""
    await asyncio.sleep(random.uniform(0, 0.0002 * min(attempt, 10)))


def _now(now: float | None) -> float:
    return time.time() if now is None else now
