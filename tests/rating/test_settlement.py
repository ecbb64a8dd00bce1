"""Authorise and settle against live counters (both backends): bundles, debits, low-balance events."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal as D

from prometheus_client import CollectorRegistry

from rating.alerts import publish_low_balance
from rating.counters import CounterStore
from rating.model import BalanceMode, Direction, Refusal
from rating.settlement import authorise_call, cycle_key, day_key, settle_call
from tests.rating.builders import START, call, rater


def test_day_and_cycle_are_utc() -> None:
    late = datetime.fromisoformat("2026-11-30T23:30:00-02:00")  # 01:30 UTC on 1 December
    assert (day_key(late), cycle_key(late)) == ("2026-12-01", "2026-12")


async def test_bundle_is_used_across_calls_then_billed(store: CounterStore) -> None:
    r = rater(package={"free_minutes": 5})
    first, _ = await settle_call(r, store, call(duration=191))  # uses 4
    assert (first.rated.free_minutes_used, first.debited_micros) == (4, 0)
    second, _ = await settle_call(r, store, call(duration=191))  # last 1, then 131 s -> 180 s billed
    assert (second.rated.free_minutes_used, second.rated.billed_seconds) == (1, 180)
    assert second.debited_micros == 41_400
    assert second.balance_micros == -41_400
    next_month = call(duration=60, start=START.replace(month=12, day=1))
    third, _ = await settle_call(r, store, next_month)
    assert third.rated.free_minutes_used == 1


async def test_concurrent_calls_share_the_bundle_exactly(store: CounterStore) -> None:
    r = rater(package={"free_minutes": 10})
    results = await asyncio.gather(*(settle_call(r, store, call(duration=120)) for _ in range(8)))
    assert sum(s.rated.free_minutes_used for s, _ in results) == 10  # 5 calls free, 3 billed
    assert sum(s.debited_micros for s, _ in results) == 3 * 27_600


async def test_authorise_reads_balance_spend_and_bundle(store: CounterStore) -> None:
    r = rater(customer={"balance_mode": BalanceMode.HARD, "daily_cap": D("1")}, package={"free_minutes": 3})
    assert (await authorise_call(r, store, call())).reason is Refusal.BALANCE_EXHAUSTED
    await store.set_balance("c", 50_000)
    assert (await authorise_call(r, store, call())).max_seconds == 180 + 180
    await store.take_free_minutes("a", cycle_key(START), 3, 3)
    assert (await authorise_call(r, store, call())).max_seconds == 180
    await store.debit_call("c", day_key(START), 1_000_000)
    await store.adjust_balance("c", 5_000_000)  # money left, but today's cap is spent
    assert (await authorise_call(r, store, call())).reason is Refusal.DAILY_CAP_REACHED
    assert (await authorise_call(r, store, call(on_net=True))).allowed


async def test_low_balance_crossing_raises_one_event(store: CounterStore) -> None:
    r = rater(customer={"low_balance_threshold": D("0.05")})
    await store.set_balance("c", 90_000)
    _, event = await settle_call(r, store, call(duration=60))  # 0.0138 -> 0.0762, above
    assert event is None
    settled, crossed = await settle_call(r, store, call(duration=120))  # -0.0276 -> 0.0486
    assert crossed is not None
    assert (crossed.customer_id, crossed.balance, crossed.threshold) == ("c", D("0.048600"), D("0.05"))
    assert settled.balance_micros == 48_600
    _, event = await settle_call(r, store, call(duration=60))  # already below: no second event
    assert event is None
    registry = CollectorRegistry()
    publish_low_balance(crossed, registry)
    assert registry.get_sample_value("sipcore_low_balance_crossings_total", {"customer": "c"}) == 1


async def test_internal_and_free_calls_do_not_touch_the_balance(store: CounterStore) -> None:
    internal = rater(customer={"internal": True}, package={"free_minutes": 10})
    settled, _ = await settle_call(internal, store, call(duration=300))
    assert (settled.debited_micros, settled.rated.free_minutes_used) == (0, 0)
    on_net, _ = await settle_call(internal, store, call(duration=300, direction=Direction.INTERNAL))
    assert on_net.debited_micros == 0
    assert await store.balance("c") == 0
