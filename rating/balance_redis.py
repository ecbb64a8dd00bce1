"""EDGE ADAPTER: the CounterStore in Redis, shared by several sipcore processes.

Why Lua: "use what is left of the bundle" and "debit and add to today's spend" must each be one
atomic step across processes; a server-side script does the read-modify-write in one round trip.
Keys (all under `prefix`): bal:{customer}, spent:{customer}:{day} (expires after 3 days),
free:{account}:{cycle} (expires after 62 days). Values are integer micro-units / minutes.
"""

from __future__ import annotations

from typing import Any

from rating.counters import Snapshot

_TAKE_FREE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local left = tonumber(ARGV[2]) - used
local granted = tonumber(ARGV[1])
if left < granted then granted = left end
if granted < 0 then granted = 0 end
if granted > 0 then
  redis.call('INCRBY', KEYS[1], granted)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return granted
"""

_DEBIT = """
local bal = redis.call('DECRBY', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return bal
"""

SPENT_TTL = 3 * 86400
FREE_TTL = 62 * 86400


class RedisCounterStore:
    """CounterStore over a `redis.asyncio.Redis` client (created and closed by the caller)."""

    def __init__(self, client: Any, prefix: str = "sipcore:rating:") -> None:
        self._r = client
        self._p = prefix
        self._take_free = client.register_script(_TAKE_FREE)
        self._debit = client.register_script(_DEBIT)

    def _bal(self, customer_id: str) -> str:
        return f"{self._p}bal:{customer_id}"

    def _spent(self, customer_id: str, day: str) -> str:
        return f"{self._p}spent:{customer_id}:{day}"

    def _free(self, account_id: str, cycle: str) -> str:
        return f"{self._p}free:{account_id}:{cycle}"

    async def snapshot(self, customer_id: str, account_id: str | None, day: str, cycle: str) -> Snapshot:
        keys = [self._bal(customer_id), self._spent(customer_id, day)]
        if account_id:
            keys.append(self._free(account_id, cycle))
        values = await self._r.mget(keys)
        nums = [int(v) if v is not None else 0 for v in values]
        return nums[0], nums[1], nums[2] if account_id else 0

    async def balance(self, customer_id: str) -> int:
        value = await self._r.get(self._bal(customer_id))
        return int(value) if value is not None else 0

    async def set_balance(self, customer_id: str, micros: int) -> None:
        await self._r.set(self._bal(customer_id), int(micros))

    async def adjust_balance(self, customer_id: str, delta_micros: int) -> int:
        return int(await self._r.incrby(self._bal(customer_id), int(delta_micros)))

    async def take_free_minutes(self, account_id: str, cycle: str, wanted: int, bundle: int) -> int:
        granted = await self._take_free(keys=[self._free(account_id, cycle)], args=[wanted, bundle, FREE_TTL])
        return int(granted)

    async def debit_call(self, customer_id: str, day: str, micros: int) -> int:
        keys = [self._bal(customer_id), self._spent(customer_id, day)]
        return int(await self._debit(keys=keys, args=[int(micros), SPENT_TTL]))
