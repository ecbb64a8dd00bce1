"""Shared counters when Redis is unreachable or emptied: calls are still authorised, rated and
recorded; debits and free minutes are applied to the process's cache, queued on disk, and replayed
once Redis is back — never lost, never applied twice. Each test runs its own redis-server, which it
kills and restarts (AOF with fsync always, so its data survives, unless the test says otherwise)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from server.billing import Billing
from server.pending_ops import Op, OpKind, PendingOps
from tests.server.counters_shared_helpers import (
    PrivateRedis,
    authorise,
    cached_balance,
    cdrs,
    ended,
    ledger_calls,
    make_billing,
    redis_balance,
    settle,
    wait_listening,
)

pytestmark = pytest.mark.redis

PREFIX = "t:"

Make = Callable[..., Any]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory)
    yield server
    server.kill()


@pytest.fixture
async def make(tmp_path: Path, private_redis: PrivateRedis) -> AsyncIterator[Make]:
    running: list[Billing] = []

    async def start(worker: str = "0", **yaml: object) -> Billing:
        billing = make_billing(tmp_path, PREFIX, int(worker), url=private_redis.url, **yaml)
        await billing.start()
        running.append(billing)
        return billing

    yield start
    for billing in running:
        if billing._flusher is not None and not billing._flusher.done():
            await billing.close()


@pytest.fixture
async def redis_up(private_redis: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    private_redis.start()
    await wait_listening(private_redis.port)
    client = aioredis.Redis.from_url(private_redis.url)
    yield client
    await client.aclose()


async def restart(server: PrivateRedis) -> None:
    server.start()
    await wait_listening(server.port)


async def test_redis_down_mid_run_calls_are_rated_and_debits_replayed_once(
    make, redis_up, private_redis, tmp_path
) -> None:
    a, b = await make("0"), await make("1")
    await settle(a, ended("c1", "soft/200", 60))  # Redis has it
    private_redis.kill()

    await settle(a, ended("c2", "soft/200", 60), ended("c3", "soft/200", 120))  # queued
    assert not a.shared.up
    assert await cached_balance(a, "soft") == -2_000_000  # the process still sees its own debits
    assert not await b.shared.sync()  # B's refresh fails: B keeps its cache
    assert await cached_balance(b, "soft") == 0
    assert authorise(a, "soft/200").allowed  # and authorisation still answers from the cache
    assert authorise(a).status == 402  # but a HARD prepaid balance is not spent blind (outage_reserve 0)

    await restart(private_redis)
    assert await a.shared.sync()  # replays c2 and c3
    assert await b.shared.sync()
    assert await redis_balance(redis_up, PREFIX, "soft") == -2_000_000
    assert await cached_balance(b, "soft") == -2_000_000
    assert await a.shared.sync()  # a second pass replays nothing
    assert await redis_balance(redis_up, PREFIX, "soft") == -2_000_000

    await a.close()
    await b.close()
    calls = sorted((e.memo, e.amount_micros) for e in ledger_calls(tmp_path, "soft"))
    assert calls == [("c1", -500_000), ("c2", -500_000), ("c3", -1_000_000)]
    assert sorted(r.call_id for r in await cdrs(tmp_path)) == ["c1", "c2", "c3"]


async def test_redis_down_at_start_serves_from_config_and_ledger_then_seeds_and_replays(
    make, private_redis, tmp_path
) -> None:
    # private_redis not started: connection refused; a reserve above the balance lets the HARD
    # customer spend it during the outage (the default, 0, refuses its priced calls: see below)
    a = await make("0", outage_reserve="5.00")
    assert not a.shared.up
    assert authorise(a).max_duration == 120  # opening 1.00 EUR from the configuration
    await settle(a, ended("c1", "pre/100", 60))
    assert await cached_balance(a) == 500_000
    assert authorise(a).max_duration == 60
    await a.outbox.flush()
    assert ledger_calls(tmp_path) == []  # not in the ledger before Redis has it (seeding relies on it)

    await restart(private_redis)
    assert await a.shared.sync()  # seed from config + ledger, then replay the queued debit
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await redis_balance(client, PREFIX) == 500_000
    finally:
        await client.aclose()
    await a.close()
    assert [(e.memo, e.amount_micros) for e in ledger_calls(tmp_path)] == [("c1", -500_000)]
    assert [(r.call_id, r.price) for r in await cdrs(tmp_path)] == [("c1", Decimal("0.5"))]


async def test_queued_operations_survive_a_restart_of_the_process(make, private_redis, tmp_path) -> None:
    a = await make("0")  # Redis down
    await settle(a, ended("c1", "pre/100", 60), ended("c2", "pre/101", 420))  # 5 free min + 2 paid
    await a.close()  # still down: the queue stays on disk

    restarted = await make("0")  # still down: the cache starts from config + ledger + the queue
    assert await cached_balance(restarted) == 1_000_000 - 500_000 - 1_000_000
    assert (await restarted.counters.snapshot("pre", "pre/101", "2026-11-22", "2026-11"))[2] == 5

    await restart(private_redis)
    assert await restarted.shared.sync()
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await redis_balance(client, PREFIX) == -500_000
        assert int(await client.get(f"{PREFIX}free:pre/101:2026-11")) == 5
    finally:
        await client.aclose()
    await restarted.close()
    assert sorted(e.memo for e in ledger_calls(tmp_path)) == ["c1", "c2"]


def lose_replies(redis: Any, name: str) -> Any:
    """Make `redis.<name>` run its script, then fail as if the connection dropped before the reply."""
    real = getattr(redis, name)

    async def run_then_fail(*args: Any) -> Any:
        await real(*args)
        raise RedisConnectionError("connection reset after the script ran")

    setattr(redis, name, run_then_fail)
    return real


async def test_a_debit_whose_reply_was_lost_is_not_applied_twice(make, redis_up) -> None:
    a = await make("0")
    real = lose_replies(a.shared.redis, "debit_once")
    await settle(a, ended("c1", "pre/100", 60))
    assert list(a.shared._queued) and not a.shared.up
    a.shared.redis.debit_once = real  # type: ignore[method-assign]
    assert await a.shared.sync()
    assert await redis_balance(redis_up, PREFIX) == 500_000  # debited once, not twice
    assert await cached_balance(a) == 500_000


async def test_free_minutes_whose_reply_was_lost_are_not_taken_twice(make, redis_up) -> None:
    a = await make("0")
    real = lose_replies(a.shared.redis, "take_free_once")
    await settle(a, ended("c1", "pre/101", 360))  # 5 free minutes + 1 paid
    a.shared.redis.take_free_once = real  # type: ignore[method-assign]
    assert await a.shared.sync()
    assert int(await redis_up.get(f"{PREFIX}free:pre/101:2026-11")) == 5  # taken once
    assert await redis_balance(redis_up, PREFIX) == 500_000
    assert await cached_balance(a) == 500_000


async def test_a_debit_queued_while_the_refresh_runs_stays_in_the_cache(make, private_redis) -> None:
    a = await make("0")  # Redis down at start
    await settle(a, ended("c1", "pre/100", 60))
    await restart(private_redis)
    real_read = a.shared.redis.read

    async def read_while_a_call_ends(*args: Any) -> Any:
        await settle(a, ended("c2", "pre/100", 60))  # still marked down: cache + queue
        return await real_read(*args)

    a.shared.redis.read = read_while_a_call_ends  # type: ignore[method-assign]
    assert await a.shared.sync()  # replays c1, reads Redis (without c2)
    assert await cached_balance(a) == 0  # Redis's 0.50 minus the queued c2
    a.shared.redis.read = real_read  # type: ignore[method-assign]
    assert await a.shared.sync()  # replays c2
    assert await cached_balance(a) == 0


async def test_minutes_granted_from_the_cache_during_an_outage_are_all_recorded(
    make, redis_up, private_redis
) -> None:
    a, b = await make("0"), await make("1")
    await settle(b, ended("b1", "pre/101", 180))  # B takes 3 of 5 in Redis; A has not refreshed
    private_redis.kill()
    await settle(a, ended("a1", "pre/101", 240))  # A's cache believes 5 are left: grants 4
    await restart(private_redis)
    assert await a.shared.sync()
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        # the bundle is over-used (7 of 5), as the CDRs say: the outage's cost, never hidden
        assert int(await client.get(f"{PREFIX}free:pre/101:2026-11")) == 7
    finally:
        await client.aclose()
    assert authorise(a, "pre/101").max_duration == 120  # no free minute left: 1.00 EUR pays 2 min


async def test_an_emptied_redis_is_seeded_again_from_config_and_ledger(make, tmp_path, private_redis) -> None:
    private_redis.persistent = False
    await restart(private_redis)
    a = await make("0")
    await settle(a, ended("c1", "pre/100", 60))
    await a.outbox.flush()  # the ledger has c1
    private_redis.kill()
    await restart(private_redis)  # empty: no balances, no seed marker

    await settle(a, ended("c2", "pre/100", 30))  # refused as UNSEEDED: queued, never from zero
    assert not a.shared.up
    assert await a.shared.sync()  # re-seeded (opening - c1), then c2 replayed
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await redis_balance(client, PREFIX) == 0
    finally:
        await client.aclose()
    assert await cached_balance(a) == 0


async def test_a_refresh_from_an_emptied_redis_does_not_zero_the_cache(make, private_redis) -> None:
    private_redis.persistent = False
    await restart(private_redis)
    a = await make("0")
    private_redis.kill()
    await restart(private_redis)
    assert await a.shared.sync()  # notices the missing seed marker and seeds again
    assert await cached_balance(a) == 1_000_000


async def test_a_queue_left_by_a_worker_that_no_longer_runs_is_adopted(make, redis_up, tmp_path) -> None:
    orphan = PendingOps(tmp_path / "var" / "counters-pending", "worker-3")  # workers 4 -> 1
    orphan.open()
    orphan.add(Op("x:d", OpKind.DEBIT, "pre", "2026-11-22", 250_000, "2026-11-22T10:00:00+00:00", "old"))
    orphan.close()
    a = await make("0")
    assert await redis_balance(redis_up, PREFIX) == 750_000
    await a.close()
    assert [(e.memo, e.amount_micros) for e in ledger_calls(tmp_path)] == [("old", -250_000)]


async def test_hard_prepaid_during_an_outage_spends_at_most_the_outage_reserve(
    make, redis_up, private_redis
) -> None:
    """Redis unreachable: each process sees only its own debits, so a HARD customer's cached balance
    could be spent once per process. With ``outage_reserve: 0`` (the default) its priced calls are
    refused (402) until Redis is back; with a reserve, each process lets it spend at most that much
    (calls cut at the reserve, like at a balance), and the cap is lifted once Redis answers."""
    strict = await make("0")
    reserved = await make("1", outage_reserve="0.75")
    assert authorise(strict).max_duration == 120 and authorise(reserved).max_duration == 120
    private_redis.kill()
    assert not await strict.shared.sync() and not await reserved.shared.sync()

    refused = authorise(strict)
    assert (refused.allowed, refused.status) == (False, 402)
    assert authorise(strict, "soft/200").allowed  # SOFT customers are not refused on money
    assert authorise(strict, "pre/101").status == 402  # bundle minutes too, as at a zero balance

    assert authorise(reserved).max_duration == 60  # 0.75 EUR pays one 60 s pulse at 0.50 EUR/min
    await settle(reserved, ended("c1", "pre/100", 60))  # 0.50 EUR of the reserve spent
    assert authorise(reserved).status == 402  # 0.25 EUR left: not one pulse
    assert await cached_balance(reserved) == 500_000  # the real (cached) balance, not capped

    await restart(private_redis)
    assert await reserved.shared.sync()  # replays c1
    assert await strict.shared.sync()
    assert authorise(strict).max_duration == 60  # the replayed debit seen, no cap any more
    assert authorise(reserved).max_duration == 60
    await strict.close()
    await reserved.close()
