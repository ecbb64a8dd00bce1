"""Authorise and settle calls against live counters: the pure Rater plus a CounterStore.

Why here: the Rater never reads state; this thin async layer reads one snapshot, asks the Rater,
then moves counters atomically. Free minutes are *taken* before pricing so concurrent calls
cannot share a minute: the call is re-rated with what was actually granted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from rating.counters import CounterStore
from rating.events import Authorisation, CallSettled, LowBalanceCrossed
from rating.model import CallToRate, Direction
from rating.money import from_micros, to_micros
from rating.rater import Rater


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def day_key(start: datetime, timezone: str = "UTC") -> str:
    """Billing day of a call: its start date in the operator's time zone (rating.billing.timezone):
    daily caps reset at the operator's midnight. A call is counted whole on the day it started."""
    return start.astimezone(_zone(timezone) if timezone != "UTC" else UTC).date().isoformat()


def cycle_key(start: datetime) -> str:
    """Billing cycle of a call: the UTC calendar month of its start (free minutes reset then)."""
    return start.astimezone(UTC).strftime("%Y-%m")


def crossed_low_balance(
    customer_id: str, before: int, after: int, threshold_micros: int, at: datetime
) -> LowBalanceCrossed | None:
    """An event when a balance moves from above the threshold to at or below it (once per crossing)."""
    if before > threshold_micros >= after:
        return LowBalanceCrossed(customer_id, from_micros(after), from_micros(threshold_micros), at)
    return None


async def authorise_call(
    rater: Rater,
    store: CounterStore,
    call: CallToRate,
    spend: tuple[int, int, int] = (0, 0, 0),
) -> Authorisation:
    """Setup-time decision with the current balance, today's spend and the bundle left.

    ``spend`` comes from the platform-wide tallies (routing.toll_fraud): (the customer's settled spend
    today, what calls in progress hold for the customer, the account's settled spend today plus its
    holds). The customer's settled spend is the larger of the store's and the tally's (each can
    only be behind: the store may be one process's, the tally forgets a restarted process's calls)."""
    if call.direction is Direction.INTERNAL or call.on_net:
        return rater.authorise(call)
    plan = rater.plan_for(call)
    account = call.account_id if call.direction is not Direction.INBOUND else None
    balance, spent, used = await store.snapshot(
        plan.customer.id, account, day_key(call.start, rater.setup.timezone), cycle_key(call.start)
    )
    left = max(plan.bundle - used, 0)
    settled, held, account_spent = spend
    return rater.authorise(call, balance, max(spent, settled) + held, left, account_spent)


async def settle_call(
    rater: Rater, store: CounterStore, call: CallToRate, route: object | None = None
) -> tuple[CallSettled, LowBalanceCrossed | None]:
    """Rate a finished call, take its free minutes, debit its price; report a low-balance crossing."""
    if call.direction is Direction.INTERNAL or call.on_net:
        return CallSettled(rater.rate(call), 0, 0), None
    plan = rater.plan_for(call)
    customer = plan.customer
    rated = rater.rate(call, plan.bundle, route)  # what the call would use from a full bundle
    if rated.free_minutes_used:
        granted = await store.take_free_minutes(
            call.account_id or "", cycle_key(call.start), rated.free_minutes_used, plan.bundle
        )
        if granted != rated.free_minutes_used:
            rated = rater.rate(call, granted, route)
    if rated.price_micros <= 0 or customer.internal:
        return CallSettled(rated, 0, await store.balance(customer.id)), None
    after = await store.debit_call(customer.id, day_key(call.start, rater.setup.timezone), rated.price_micros)
    event = crossed_low_balance(
        customer.id,
        after + rated.price_micros,
        after,
        to_micros(customer.low_balance_threshold, "low-balance threshold"),
        call.start,
    )
    return CallSettled(rated, rated.price_micros, after), event
