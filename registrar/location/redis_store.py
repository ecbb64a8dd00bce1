"""Shared location store on Redis (`redis.asyncio`): several processes and hosts see one registry.

Layout under ``prefix`` (default "sipcore:loc"):
- ``{p}:aor:{aor}`` — a hash per AOR: field = binding key, value = msgpack binding (`codec`), plus a
  ``_v`` version token. The key's TTL is the AOR's latest expiry + ``ttl_margin``, so Redis drops an
  AOR whose bindings all expired with no sweeper. Reads filter by the caller's logical ``now``, so an
  expired binding kept until its siblings' TTL (or within the margin) is never returned.
- ``{p}:flow:{connection_id}`` — a set of AORs with a binding on that TCP connection (same TTL rule).
- ``{p}:aors`` / ``{p}:contacts`` — sorted sets scored by expiry, for the count gauges; pruned of
  expired members on every write.

Atomic per AOR by optimistic concurrency: read the hash (1 round trip), run the same pure
`plan_register` as the memory backend, then a Lua compare-and-set (1 round trip) replaces the hash only
if ``_v`` is unchanged; on a race it re-reads and retries. The version is a random token, so an AOR
deleted and re-created in between cannot be mistaken for the one we read. Not for Redis Cluster
(the script touches several keys).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from typing import Any

import redis.asyncio as aioredis

from registrar.location import codec
from registrar.location.binding import Binding, ordered
from registrar.location.changes import OverflowPolicy, RegisterChanges
from registrar.location.errors import ContentionError
from registrar.location.events import LocationEvent
from registrar.location.rules import ApplyResult, plan_flow_closed, plan_register

_VERSION = b"_v"

# KEYS: 1 AOR hash, 2 aors zset, 3 contacts zset, 4.. flow sets to add the AOR to
# ARGV: 1 expected version ("" = absent), 2 new version, 3 ttl ms (0: keep the current TTL), 4 aor,
#       5 latest expiry, 6 now (prune scores <= now; "-inf": no pruning), 7 n,
#       then n x (field, value, expires_at), then the removed fields
_CAS = """
local cur = redis.call('HGET', KEYS[1], '_v') or ''
if cur ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[3])
if ttl == 0 then
  ttl = redis.call('PTTL', KEYS[1])
  if ttl <= 0 then ttl = 86400000 end
end
redis.call('DEL', KEYS[1])
local aor = ARGV[4]
local n = tonumber(ARGV[7])
local i = 8
if n > 0 then
  local h = {'_v', ARGV[2]}
  for _ = 1, n do
    h[#h + 1] = ARGV[i]
    h[#h + 1] = ARGV[i + 1]
    redis.call('ZADD', KEYS[3], ARGV[i + 2], aor .. '\\n' .. ARGV[i])
    i = i + 3
  end
  redis.call('HSET', KEYS[1], unpack(h))
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('ZADD', KEYS[2], ARGV[5], aor)
else
  redis.call('ZREM', KEYS[2], aor)
end
while i <= #ARGV do
  redis.call('ZREM', KEYS[3], aor .. '\\n' .. ARGV[i])
  i = i + 1
end
for k = 4, #KEYS do
  redis.call('SADD', KEYS[k], aor)
  if redis.call('PTTL', KEYS[k]) < ttl then redis.call('PEXPIRE', KEYS[k], ttl) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[6])
return 1
"""


class RedisLocationStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "sipcore:loc",
        ttl_margin: float = 5.0,
        max_retries: int = 50,
        owns_client: bool = False,
    ) -> None:
        """``ttl_margin`` covers clock skew between hosts: keys outlive their latest expiry by it."""
        self._r = client
        self.prefix = prefix
        self.ttl_margin = ttl_margin
        self.max_retries = max_retries
        self._owns = owns_client
        self._cas = client.register_script(_CAS)
        self._aors_key = f"{prefix}:aors"
        self._contacts_key = f"{prefix}:contacts"

    @classmethod
    def from_url(cls, url: str = "redis://127.0.0.1:6379/0", **kwargs: Any) -> RedisLocationStore:
        return cls(aioredis.Redis.from_url(url), owns_client=True, **kwargs)

    def _aor_key(self, aor: str) -> str:
        return f"{self.prefix}:aor:{aor}"

    def _flow_key(self, connection_id: str) -> str:
        return f"{self.prefix}:flow:{connection_id}"

    async def _read(self, aor: str) -> tuple[bytes, dict[str, Binding]]:
        raw: dict[bytes, bytes] = await self._r.hgetall(self._aor_key(aor))
        version = raw.pop(_VERSION, b"")
        return version, {f.decode(): codec.decode(aor, v) for f, v in raw.items()}

    async def get(self, aor: str, now: float) -> list[Binding]:
        _, stored = await self._read(aor)
        return list(ordered([b for b in stored.values() if b.expires_at > now]))

    async def apply(
        self,
        aor: str,
        changes: RegisterChanges,
        now: float,
        max_contacts: int | None = None,
        policy: OverflowPolicy = OverflowPolicy.REJECT,
    ) -> ApplyResult:
        for attempt in range(self.max_retries):
            if attempt:
                await _backoff(attempt)
            version, stored = await self._read(aor)
            result = plan_register(aor, tuple(stored.values()), changes, now, max_contacts, policy)
            live_before = sum(1 for b in stored.values() if b.expires_at > now)
            if not result.events and len(result.bindings) == live_before == len(stored):
                return result
            if await self._write(aor, version, stored, result.bindings, now):
                return result
        raise ContentionError(f"{aor}: gave up after {self.max_retries} concurrent updates")

    async def remove_flow(self, connection_id: str) -> list[LocationEvent]:
        flow_key = self._flow_key(connection_id)
        events: list[LocationEvent] = []
        for raw_aor in await self._r.smembers(flow_key):
            aor = raw_aor.decode()
            for attempt in range(self.max_retries):
                if attempt:
                    await _backoff(attempt)
                version, stored = await self._read(aor)
                kept, evs = plan_flow_closed(tuple(stored.values()), connection_id)
                if not evs or await self._write(aor, version, stored, kept, None):
                    events.extend(evs)
                    break
            else:
                raise ContentionError(f"{aor}: gave up closing flow {connection_id}")
        await self._r.delete(flow_key)
        return events

    async def expire(self, now: float) -> list[Binding]:
        """Redis expires bindings by TTL and reads filter by ``now``: nothing to sweep or report here.
        Prunes the count indexes only."""
        async with self._r.pipeline(transaction=False) as p:
            p.zremrangebyscore(self._aors_key, "-inf", now)
            p.zremrangebyscore(self._contacts_key, "-inf", now)
            await p.execute()
        return []

    async def count_aors(self, now: float | None = None) -> int:
        return await self._r.zcount(self._aors_key, f"({_now(now)!r}", "+inf")

    async def count_contacts(self, now: float | None = None) -> int:
        return await self._r.zcount(self._contacts_key, f"({_now(now)!r}", "+inf")

    async def close(self) -> None:
        if self._owns:
            await self._r.aclose()

    async def _write(
        self,
        aor: str,
        version: bytes,
        stored: dict[str, Binding],
        bindings: tuple[Binding, ...],
        now: float | None,
    ) -> bool:
        """Compare-and-set the AOR to ``bindings``. ``now`` None (no logical clock, e.g. a flow closed):
        keep the key's TTL — the remaining bindings expire no later — and skip index pruning."""
        latest = max((b.expires_at for b in bindings), default=0.0)
        if now is None:
            ttl_ms, prune = 0, "-inf"
        else:
            ttl_ms, prune = max(1, math.ceil((latest - now + self.ttl_margin) * 1000)), repr(now)
        args: list[Any] = [version, os.urandom(8).hex(), ttl_ms, aor, repr(latest), prune, len(bindings)]
        fields = set()
        flow_keys = set()
        for b in bindings:
            key = b.key
            fields.add(key)
            args += (key, codec.encode(b), repr(b.expires_at))
            if b.flow.connection_id is not None and b.flow_alive:
                flow_keys.add(self._flow_key(b.flow.connection_id))
        args += [k for k in stored if k not in fields]
        keys = [self._aor_key(aor), self._aors_key, self._contacts_key, *sorted(flow_keys)]
        return bool(await self._cas(keys=keys, args=args))


async def _backoff(attempt: int) -> None:
    """Jittered pause after losing a compare-and-set, so racing writers spread out (≤ ~2 ms each)."""
    await asyncio.sleep(random.uniform(0, 0.0002 * min(attempt, 10)))


def _now(now: float | None) -> float:
    return time.time() if now is None else now
