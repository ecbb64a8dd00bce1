"""EDGE ADAPTER: the CounterStore in Redis, shared by several sipcore processes.

Why Lua: "use what is left of the bundle" and "debit and add to today's spend" must each be one
atomic step across processes; a server-side script does the read-modify-write in one round trip.
Keys (all under `prefix`): bal:{customer}, spent:{customer}:{day} (expires after 3 days),
free:{account}:{cycle} (expires after 62 days). Values are integer micro-units / minutes.

Shared by several processes (server.shared_counters) the store also keeps: `seeded` (the highest
ledger id folded into the balances; its absence means "empty Redis: seed me"), `opening` (hash:
customer -> opening balance folded in) and op:{id} markers (what one settlement operation applied,
kept 7 days), so a replayed operation is applied once. Every *_once script refuses with UNSEEDED
while `seeded` is missing: a debit on an emptied Redis would otherwise start a balance from zero.
Arithmetic on amounts is left to Redis (INCRBY on the argument strings): Lua numbers are doubles.
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

_UNSEEDED = "if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('UNSEEDED') end\n"

# KEYS: seeded, bal, spent, op  ARGV: micros, spent ttl, op ttl  ->  {balance, spent that day}
_DEBIT_ONCE = (
    _UNSEEDED
    + """
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(redis.call('GET', KEYS[3]) or '0')}
end
local bal = redis.call('DECRBY', KEYS[2], ARGV[1])
local spent = redis.call('INCRBY', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[3])
return {bal, spent}
"""
)

# KEYS: seeded, free, op  ARGV: wanted, bundle, free ttl, op ttl  ->  {granted, used in the cycle}
_TAKE_FREE_ONCE = (
    _UNSEEDED
    + """
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local done = redis.call('GET', KEYS[3])
if done then return {tonumber(done), used} end
local granted = tonumber(ARGV[1])
local left = tonumber(ARGV[2]) - used
if left < granted then granted = left end
if granted < 0 then granted = 0 end
if granted > 0 then
  used = redis.call('INCRBY', KEYS[2], granted)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('SET', KEYS[3], granted, 'EX', ARGV[4])
return {granted, used}
"""
)

# Replay of minutes granted from a process's cache while Redis was away: make this operation's
# contribution exactly ARGV[1] minutes (whatever an earlier attempt under the same id applied).
# KEYS: seeded, free, op  ARGV: minutes, free ttl, op ttl  ->  used in the cycle
_FORCE_FREE = (
    _UNSEEDED
    + """
local delta = tonumber(ARGV[1]) - tonumber(redis.call('GET', KEYS[3]) or '0')
local used
if delta ~= 0 then
  used = redis.call('INCRBY', KEYS[2], delta)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
else
  used = tonumber(redis.call('GET', KEYS[2]) or '0')
end
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
return used
"""
)

# Fold the configuration's opening balances and the ledger into the balances, once.
# KEYS: seeded, opening, folded, bal:{c}...  ARGV: expected watermark ('' = unseeded), new watermark,
# then per customer: id, opening, sum of every ledger entry, sum of non-call non-live entries after the
# watermark; then per live entry after the watermark (admin API payments and charges): customer, ledger
# id, amount. A customer seen before moves by (new opening - folded opening) + entries since + the live
# entries not folded yet; a new one (or any, on an unseeded Redis) is set to opening + every entry
# (its live entries are marked folded). Returns 0 when the watermark moved meanwhile.
_SEED = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
if not cur then redis.call('DEL', KEYS[2], KEYS[3]) end
local fresh, bal = {}, {}
for i = 4, #KEYS do
  local a = 3 + (i - 4) * 4
  local old = redis.call('HGET', KEYS[2], ARGV[a])
  if old then
    redis.call('INCRBY', KEYS[i], ARGV[a + 3])
    redis.call('INCRBY', KEYS[i], ARGV[a + 1])
    redis.call('DECRBY', KEYS[i], old)
  else
    redis.call('SET', KEYS[i], ARGV[a + 1])
    redis.call('INCRBY', KEYS[i], ARGV[a + 2])
    fresh[ARGV[a]] = true
  end
  bal[ARGV[a]] = KEYS[i]
  redis.call('HSET', KEYS[2], ARGV[a], ARGV[a + 1])
end
local b = 3 + (#KEYS - 3) * 4
while b + 2 <= #ARGV do
  local key = bal[ARGV[b]]
  if key and redis.call('SISMEMBER', KEYS[3], ARGV[b + 1]) == 0 then
    if not fresh[ARGV[b]] then redis.call('INCRBY', key, ARGV[b + 2]) end
    redis.call('SADD', KEYS[3], ARGV[b + 1])
  end
  b = b + 3
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# A live ledger entry (admin API payment or charge) into the balance, once per ledger id.
# KEYS: seeded, folded, bal  ARGV: ledger id, signed amount  ->  {1 if applied now, balance}
_FOLD_ONCE = (
    _UNSEEDED
    + """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return {0, tonumber(redis.call('GET', KEYS[3]) or '0')}
end
local bal = redis.call('INCRBY', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return {1, bal}
"""
)

SPENT_TTL = 3 * 86400
FREE_TTL = 62 * 86400
OP_TTL = 7 * 86400
READ_CHUNK = 2000


class RedisCounterStore:
    """CounterStore over a `redis.asyncio.Redis` client (created and closed by the caller)."""

    def __init__(self, client: Any, prefix: str = "sipcore:rating:") -> None:
        self._r = client
        self._p = prefix
        self._take_free = client.register_script(_TAKE_FREE)
        self._debit = client.register_script(_DEBIT)
        self._debit_once = client.register_script(_DEBIT_ONCE)
        self._take_free_once = client.register_script(_TAKE_FREE_ONCE)
        self._force_free = client.register_script(_FORCE_FREE)
        self._seed = client.register_script(_SEED)
        self._fold_once = client.register_script(_FOLD_ONCE)

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

    # -- shared by several processes (server.shared_counters) --
    def _op(self, op_id: str) -> str:
        return f"{self._p}op:{op_id}"

    @property
    def seeded_key(self) -> str:
        return f"{self._p}seeded"

    async def debit_once(self, op_id: str, customer_id: str, day: str, micros: int) -> tuple[int, int]:
        """debit_call under an operation id: applied once however often it is sent.
        Returns (balance, spent on `day`)."""
        keys = [self.seeded_key, self._bal(customer_id), self._spent(customer_id, day), self._op(op_id)]
        bal, spent = await self._debit_once(keys=keys, args=[int(micros), SPENT_TTL, OP_TTL])
        return int(bal), int(spent)

    async def take_free_once(
        self, op_id: str, account_id: str, cycle: str, wanted: int, bundle: int
    ) -> tuple[int, int]:
        """take_free_minutes under an operation id (a resend answers the first grant).
        Returns (granted, used in `cycle`)."""
        keys = [self.seeded_key, self._free(account_id, cycle), self._op(op_id)]
        granted, used = await self._take_free_once(keys=keys, args=[wanted, bundle, FREE_TTL, OP_TTL])
        return int(granted), int(used)

    async def force_free(self, op_id: str, account_id: str, cycle: str, minutes: int) -> int:
        """Record that operation `op_id` used exactly `minutes` (granted from a cache while Redis was
        away, so possibly beyond the bundle). Returns the minutes used in `cycle`."""
        keys = [self.seeded_key, self._free(account_id, cycle), self._op(op_id)]
        return int(await self._force_free(keys=keys, args=[int(minutes), FREE_TTL, OP_TTL]))

    async def forget_ops(self, op_ids: list[str]) -> None:
        """Drop the markers of operations whose answer was received (no resend can follow)."""
        if op_ids:
            await self._r.unlink(*(self._op(i) for i in op_ids))

    async def watermark(self) -> int | None:
        """The highest ledger id folded into the balances; None when Redis has not been seeded."""
        value = await self._r.get(self.seeded_key)
        return int(value) if value is not None else None

    @property
    def folded_key(self) -> str:
        return f"{self._p}folded"

    async def seed(
        self,
        expected: int | None,
        watermark: int,
        rows: list[tuple[str, int, int, int]],
        live: tuple[tuple[str, int, int], ...] = (),
    ) -> bool:
        """Fold (customer, opening, every ledger entry, non-call non-live entries after `expected`) rows
        and the live entries (customer, ledger id, amount) not folded yet in one atomic step; False
        (nothing done) if the watermark is no longer `expected`."""
        keys = [self.seeded_key, f"{self._p}opening", self.folded_key, *(self._bal(row[0]) for row in rows)]
        args: list[str | int] = ["" if expected is None else str(expected), watermark]
        for customer_id, opening, every, since in rows:
            args += [customer_id, int(opening), int(every), int(since)]
        for customer_id, entry_id, amount in live:
            args += [customer_id, int(entry_id), int(amount)]
        return bool(await self._seed(keys=keys, args=args))

    async def fold_once(self, entry_id: int, customer_id: str, amount: int) -> tuple[bool, int]:
        """Add a live ledger entry (admin API payment or charge) to the balance unless entry
        ``entry_id`` was folded already (here or by a seed). Returns (applied now?, balance)."""
        keys = [self.seeded_key, self.folded_key, self._bal(customer_id)]
        applied, bal = await self._fold_once(keys=keys, args=[int(entry_id), int(amount)])
        return bool(applied), int(bal)

    async def read(
        self, customers: list[str], spent: list[tuple[str, str]], free: list[tuple[str, str]]
    ) -> tuple[bool, list[int], list[int], list[int]]:
        """(seeded?, balances, spent per (customer, day), used per (account, cycle)) in one round trip:
        MGETs of READ_CHUNK keys pipelined, so Redis never blocks long on one command."""
        keys = [self.seeded_key, *(self._bal(c) for c in customers)]
        keys += [self._spent(c, d) for c, d in spent] + [self._free(a, c) for a, c in free]
        pipe = self._r.pipeline(transaction=False)
        for i in range(0, len(keys), READ_CHUNK):
            pipe.mget(keys[i : i + READ_CHUNK])
        raw = [value for chunk in await pipe.execute() for value in chunk]
        nums = [int(v) if v is not None else 0 for v in raw[1:]]
        n, m = len(customers), len(spent)
        return raw[0] is not None, nums[:n], nums[n : n + m], nums[n + m :]
