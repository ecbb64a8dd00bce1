"""Balances, daily spend and free minutes shared by several server processes through Redis
(rating.counters.backend: redis), against the real Redis at 127.0.0.1:6379: two Billing objects with
their own caches and clients stand for two processes. Restart and seeding rules too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from config.loader import ConfigError, load_config_text
from rating.ledger import EntryKind
from rating.model import CallToRate, Direction
from rating.settlement import authorise_call
from server.billing import Billing, run_now
from tests.server.counters_shared_helpers import (
    REDIS_URL,
    T0,
    authorise,
    cached_balance,
    cdrs,
    config_yaml,
    drop_prefix,
    ended,
    ledger_calls,
    make_billing,
    post,
    redis_balance,
    settle,
    unique_prefix,
)

pytestmark = pytest.mark.redis

Make = Callable[..., Billing]


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(REDIS_URL)
    try:
        await c.ping()
    except Exception as exc:
        await c.aclose()
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc!r}")
    yield c
    await c.aclose()


@pytest.fixture
async def prefix(client: aioredis.Redis) -> AsyncIterator[str]:
    p = unique_prefix()
    yield p
    await drop_prefix(client, p)


@pytest.fixture
async def make(tmp_path: Path, prefix: str) -> AsyncIterator[Make]:
    """Start a "process" (worker index given); every one still running is closed at the end."""
    running: list[Billing] = []

    async def start(worker: str = "0", **yaml: object) -> Billing:
        billing = make_billing(tmp_path, prefix, int(worker), **yaml)
        await billing.start()
        running.append(billing)
        return billing

    yield start  # type: ignore[misc]
    for billing in running:
        if billing._flusher is not None and not billing._flusher.done():
            await billing.close()


async def stop(billing: Billing) -> None:
    await billing.close()


# -- one balance, two processes ---------------------------------------------------------------------------


async def test_a_debit_in_one_process_is_seen_by_the_other_after_a_refresh(make, client, prefix) -> None:
    a, b = await make("0"), await make("1")
    assert await cached_balance(a) == await cached_balance(b) == 1_000_000

    await settle(a, ended("c1", "pre/100", 60))  # 0.50 EUR
    assert await redis_balance(client, prefix) == 500_000
    assert await cached_balance(a) == 500_000  # what Redis answered, at once
    assert await cached_balance(b) == 1_000_000  # B has not refreshed yet

    assert await b.shared.sync()
    assert await cached_balance(b) == 500_000


async def test_the_periodic_refresh_brings_another_process_debit(make) -> None:
    a, b = await make("0"), await make("1", refresh=0.05)
    await settle(a, ended("c1", "pre/100", 60))
    for _ in range(200):  # bounded: the behaviour, not the timing, is under test
        if await cached_balance(b) == 500_000:
            break
        await asyncio.sleep(0.05)
    assert await cached_balance(b) == 500_000


async def test_prepaid_is_refused_in_b_once_a_has_spent_the_balance(make) -> None:
    a, b = await make("0"), await make("1")
    assert authorise(b).max_duration == 120  # 1.00 EUR at 0.50 EUR/min
    await settle(a, ended("c1", "pre/100", 120))  # spends it all
    assert authorise(a).status == 402
    # the documented window: B still authorises from its cache until its next refresh...
    assert authorise(b).allowed
    await b.shared.sync()
    refused = authorise(b)
    assert (refused.allowed, refused.status, refused.reason) == (False, 402, "Payment Required")


async def test_the_hard_stop_duration_follows_the_shared_balance(make) -> None:
    a, b = await make("0"), await make("1")
    await settle(a, ended("c1", "pre/100", 60))
    await b.shared.sync()
    assert authorise(b).max_duration == 60  # 0.50 EUR left


async def test_concurrent_debits_in_two_processes_are_all_counted(make, client, prefix) -> None:
    a, b = await make("0"), await make("1")
    await asyncio.gather(
        settle(a, *(ended(f"a{i}", "pre/100", 60) for i in range(10))),
        settle(b, *(ended(f"b{i}", "pre/100", 60) for i in range(10))),
    )
    expected = 1_000_000 - 20 * 500_000  # settlement bills what was spoken, even past zero
    assert await redis_balance(client, prefix) == expected
    await a.shared.sync()
    await b.shared.sync()
    assert await cached_balance(a) == await cached_balance(b) == expected


async def test_soft_customers_are_not_refreshed_but_settle_in_redis(make, client, prefix) -> None:
    a, b = await make("0"), await make("1")
    assert (b.shared.watch.hard, b.shared.watch.capped) == (("pre",), ("cap",))  # "soft": not read
    await settle(a, ended("a1", "soft/200", 60))
    await b.shared.sync()
    assert await cached_balance(b, "soft") == 0  # not read: authorisation does not need it
    await settle(b, ended("b1", "soft/200", 60))
    assert await redis_balance(client, prefix, "soft") == -1_000_000
    assert await cached_balance(b, "soft") == -1_000_000  # what Redis answered B's own debit


async def test_free_minutes_are_never_taken_twice_across_processes(make, client, prefix) -> None:
    a, b = await make("0"), await make("1")  # pre/101 has a 5-minute bundle
    await asyncio.gather(settle(a, ended("a", "pre/101", 180)), settle(b, ended("b", "pre/101", 180)))
    assert int(await client.get(f"{prefix}free:pre/101:2026-11")) == 5
    for billing in (a, b):
        await billing.close()
    records = {r.call_id: r for r in await cdrs(a.ledger_path.parents[1])}
    assert sorted(r.free_minutes for r in records.values()) == [2, 3]  # 5 in all, not 6
    # the call that got 2 minutes pays its third: 60 s at 0.50 EUR/min
    assert sorted(r.price for r in records.values()) == [0, records["a"].price + records["b"].price]
    assert await redis_balance(client, prefix) == 1_000_000 - 500_000


async def test_free_minutes_left_reach_the_other_process_cache(make) -> None:
    a, b = await make("0"), await make("1")
    await settle(a, ended("a", "pre/101", 240))  # 4 of 5 minutes
    await b.shared.sync()
    # B: 1 free minute + 1.00 EUR at 0.50/min = 3 minutes
    assert authorise(b, "pre/101").max_duration == 180


async def test_daily_spend_is_shared(make, client, prefix) -> None:
    a = await make("0")
    await settle(a, ended("c1", "cap/300", 60))
    assert int(await client.get(f"{prefix}spent:cap:2026-11-22")) == 500_000
    b = await make("1")  # a process started later loads it
    assert (await b.counters.snapshot("cap", None, "2026-11-22", "2026-11"))[1] == 500_000


async def test_a_daily_cap_counts_the_spend_of_every_process(make) -> None:
    a, b = await make("0"), await make("1")
    assert authorise(b, "cap/300").max_duration == 120  # cap 1.00 EUR at 0.50 EUR/min
    await settle(a, ended("c1", "cap/300", 60))
    await b.shared.sync()
    assert authorise(b, "cap/300").max_duration == 60
    await settle(a, ended("c2", "cap/300", 60))
    await b.shared.sync()
    refused = authorise(b, "cap/300")
    assert (refused.allowed, refused.reason) == (False, "Daily Spending Cap Reached")


async def test_debits_reach_the_ledger_once(make, tmp_path: Path) -> None:
    a, b = await make("0"), await make("1")
    await settle(a, ended("c1", "pre/100", 60))
    await settle(b, ended("c2", "pre/100", 30))
    await stop(a)
    await stop(b)
    assert sorted((e.memo, e.amount_micros) for e in ledger_calls(tmp_path)) == [
        ("c1", -500_000),
        ("c2", -500_000),
    ]


async def test_a_refresh_read_before_a_debit_does_not_undo_it_in_the_cache(make) -> None:
    a = await make("0")
    real_read = a.shared.redis.read

    async def debit_lands_after_the_read(*args: Any) -> Any:
        values = await real_read(*args)  # 1.00 EUR
        await settle(a, ended("c1", "pre/100", 60))  # Redis answers 0.50 into the cache
        return values

    a.shared.redis.read = debit_lands_after_the_read  # type: ignore[method-assign]
    await a.shared.sync()
    assert await cached_balance(a) == 500_000  # the stale 1.00 was not written over it
    a.shared.redis.read = real_read  # type: ignore[method-assign]
    await a.shared.sync()
    assert await cached_balance(a) == 500_000


# -- seeding and restarts -----------------------------------------------------------------------------------


async def test_restarting_every_process_neither_resets_nor_double_counts(make, client, prefix) -> None:
    a, b = await make("0"), await make("1")
    await settle(a, ended("c1", "pre/100", 60))
    await stop(a)
    await stop(b)  # the ledger now holds the call debit: it must not be folded in again
    a, b = await make("0"), await make("1")
    assert await redis_balance(client, prefix) == 500_000
    assert await cached_balance(a) == await cached_balance(b) == 500_000


async def test_restarting_one_process_keeps_the_shared_balance(make, client, prefix) -> None:
    a, b = await make("0"), await make("1")
    await settle(a, ended("c1", "pre/100", 60))
    await stop(a)
    a = await make("0")
    await settle(b, ended("c2", "pre/100", 60))
    await a.shared.sync()
    assert await redis_balance(client, prefix) == 0
    assert await cached_balance(a) == await cached_balance(b) == 0


async def test_processes_starting_together_seed_once(make, client, prefix, tmp_path: Path) -> None:
    post(tmp_path, EntryKind.PAYMENT, 2_000_000)
    await asyncio.gather(make("0"), make("1"), make("2"))
    assert await redis_balance(client, prefix) == 3_000_000


async def test_a_ledger_from_the_memory_backend_seeds_the_first_start(make, client, prefix, tmp_path) -> None:
    mem = await make("0", backend="memory")
    await settle(mem, ended("c1", "pre/100", 60))
    await stop(mem)  # its call debit is in the ledger, never in Redis
    post(tmp_path, EntryKind.PAYMENT, 250_000)
    a = await make("0")
    assert await redis_balance(client, prefix) == 1_000_000 - 500_000 + 250_000
    assert await cached_balance(a) == 750_000


async def test_a_payment_posted_while_running_is_folded_once_at_the_next_start(
    make, client, prefix, tmp_path
) -> None:
    a, b = await make("0"), await make("1")
    await settle(a, ended("c1", "pre/100", 60))
    post(tmp_path, EntryKind.PAYMENT, 3_000_000)  # sipcore balance add-payment
    post(tmp_path, EntryKind.CHARGE, -1_000_000)
    await stop(a)  # as with the memory backend, the running processes see it after a (re)start...
    a = await make("0")
    assert await redis_balance(client, prefix) == 1_000_000 - 500_000 + 2_000_000
    await stop(a)
    a = await make("0")  # ...and only once
    await b.shared.sync()
    assert await redis_balance(client, prefix) == 2_500_000
    assert await cached_balance(b) == 2_500_000


async def test_a_changed_opening_balance_moves_the_balance_by_the_difference(make, client, prefix) -> None:
    a = await make("0")
    await settle(a, ended("c1", "pre/100", 60))
    await stop(a)
    a = await make("0", initial="3.00")  # reloaded configuration: opening 1.00 -> 3.00
    expected = 3_000_000 - 500_000
    assert await redis_balance(client, prefix) == expected
    await stop(a)
    mem = await make("5", backend="memory", initial="3.00")  # the memory store's rule: opening + ledger
    assert await cached_balance(mem) == expected
    await stop(mem)
    a = await make("0", initial="3.00")  # a second restart changes nothing
    assert await redis_balance(client, prefix) == expected


async def test_a_customer_added_later_is_seeded_with_its_ledger(make, client, prefix, tmp_path) -> None:
    a = await make("0")
    post(tmp_path, EntryKind.PAYMENT, 700_000, customer="soft")
    await client.hdel(f"{prefix}opening", "soft")  # as if "soft" were not in the first configuration
    await client.delete(f"{prefix}bal:soft")
    await stop(a)
    await make("0")
    assert await redis_balance(client, prefix, "soft") == 700_000


# -- configuration ---------------------------------------------------------------------------------------


# a configuration needs a customer (config.loader refuses a file that serves nobody)
ONE_CUSTOMER = "customers: [{id: c, name: C, reference: R, country: FR, domains: [c.test], internal: true}]\n"


def test_the_default_backend_is_memory(tmp_path: Path) -> None:
    cfg = load_config_text(ONE_CUSTOMER, tmp_path)
    assert cfg.rating.counters.backend == "memory"


def test_the_redis_backend_settings(tmp_path: Path) -> None:
    text = "rating: {counters: {backend: redis, url: 'redis://10.0.0.5:6380/2', key_prefix: 'x:', refresh_interval: 0.5}}"
    c = load_config_text(ONE_CUSTOMER + text, tmp_path).rating.counters
    assert (c.backend, c.url, c.key_prefix, c.refresh_interval) == (
        "redis",
        "redis://10.0.0.5:6380/2",
        "x:",
        0.5,
    )


@pytest.mark.parametrize(
    ("counters", "problem"),
    [
        ("{backend: redis, refresh_interval: 0}", "refresh_interval"),
        ("{backend: mongo}", "counters"),
        ("{backend: memory, url: 'redis://x'}", "url"),
    ],
)
def test_bad_counter_settings_are_refused(tmp_path: Path, counters: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config_text(f"rating: {{counters: {counters}}}", tmp_path)


def test_several_workers_on_the_memory_backend_are_warned_about(tmp_path, prefix) -> None:
    with structlog.testing.capture_logs() as logs:
        make_billing(tmp_path, prefix, 0, backend="memory", workers=2)
        make_billing(tmp_path, prefix, 1, backend="memory", workers=2)  # warned once
        make_billing(tmp_path, prefix, 0, backend="redis", workers=2)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["balances_per_process"]


def test_one_process_on_the_memory_backend_is_not_warned_about(tmp_path, prefix) -> None:
    with structlog.testing.capture_logs() as logs:
        from server.billing import build_billing
        from tests.server.counters_shared_helpers import write_rates

        write_rates(tmp_path)
        build_billing(load_config_text(config_yaml(tmp_path / "var", prefix, backend="memory"), tmp_path))
    assert [e for e in logs if e["log_level"] == "warning"] == []


async def test_authorisation_reads_the_cache_without_suspending(make) -> None:
    a = await make("0")
    call = CallToRate(Direction.OUTBOUND, "pre/100", "+33612345678", T0)
    answer = run_now(authorise_call(a.rater, a.counters, call))  # raises if the store would wait
    assert (answer.allowed, answer.max_seconds) == (True, 120)
