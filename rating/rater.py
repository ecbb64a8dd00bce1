"""The Rater: authorise a call at setup, rate it at its end. Pure: counters are arguments.

Built once per RatingSetup (config load/reload). Per call it does one dict lookup for the
account, one longest-prefix match (a few dict probes) and integer arithmetic; no Decimal, no clock, no I/O.
Balance, daily spend and free minutes left are read by the caller (see rating.settlement) and
passed in, so the same code serves one process (memory counters) or many (Redis counters).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from functools import partial

from rating.errors import NoRate, SetupError, UnknownAccount
from rating.events import Authorisation, CallRated
from rating.model import (
    AccountBilling,
    BalanceMode,
    CallToRate,
    CustomerBilling,
    DidBilling,
    Direction,
    Package,
    Pricing,
    RatingSetup,
    Refusal,
)
from rating.money import AMOUNT_DIVISOR, MoneyError, amount_ratio, rate_units, to_micros
from rating.pulse import billed_seconds
from rating.tariff import OUT_OF_PLAN, PREMIUM, CompiledTable, Entry, Route, compile_package, row_terms
from sipcore.speedups import optional_extension

_INBOUND = Direction.INBOUND
_OUTBOUND = Direction.OUTBOUND
_FORWARDED = Direction.FORWARDED
_INTERNAL = Direction.INTERNAL
_D = AMOUNT_DIVISOR
_D2 = 2 * AMOUNT_DIVISOR

_ALLOWED_UNLIMITED = Authorisation(True, None, None)
_new = tuple.__new__  # builds a NamedTuple from a ready tuple, skipping the generated __new__


def _refused(reason: Refusal, route: Entry | None = None) -> Authorisation:
    return Authorisation(False, reason, None, route)


_REFUSALS = {r: Authorisation(False, r, None) for r in Refusal}

# The hot path in C (rating/_rater_c.c), when built: it answers the everyday calls from the same
# terms and hands every other one to the Python methods below, which stay the reference
# (tests/rating/test_rater_c.py holds the two to the same answers).
_rater_c = optional_extension("rating._rater_c")
if _rater_c is not None:
    _rater_c.setup(
        Authorisation, CallRated, CallToRate, _OUTBOUND, _FORWARDED, Pricing.INTERNAL, Pricing.UNANSWERED
    )
# _Plan.fast_terms modes: what the C authorise may decide alone once the route is found
_MODE_REFERENCE, _MODE_PREPAID, _MODE_UNLIMITED = 0, 1, 2


class _Plan:
    """Everything about one billed party the hot path needs, flattened at build time."""

    __slots__ = (
        "acap",
        "account",
        "blocks",
        "bundle",
        "cap",
        "connect",
        "currency",
        "customer",
        "customer_id",
        "end",
        "fast_terms",
        "hard",
        "incoming_rate",
        "incoming_ratio",
        "initial",
        "internal",
        "lower",
        "package",
        "package_name",
        "pivot",
        "pivot_get",
        "rate_terms",
        "simple_prepaid",
        "subsequent",
        "table",
        "upper",
    )

    def __init__(
        self,
        account: AccountBilling | None,
        customer: CustomerBilling,
        package: Package | None,
        table: CompiledTable | None,
        end: datetime | None,
    ) -> None:
        self.account = account
        self.customer = customer
        self.customer_id = customer.id
        self.package = package
        self.package_name = package.name if package else None
        self.table = table
        self.pivot = table.pivot if table else slice(0)  # CompiledTable's search, inlined in authorise
        self.pivot_get = table.pivot_get if table else {}.get
        self.lower = table.lower if table else ()
        self.upper = table.upper if table else ()
        self.blocks = 0
        if account is not None:
            self.blocks = (PREMIUM if account.block_premium else 0) | (
                OUT_OF_PLAN if account.block_out_of_plan else 0
            )
        self.end = end  # first instant no longer billed (UTC), or None
        self.currency = customer.currency
        self.internal = customer.internal
        self.hard = customer.balance_mode is BalanceMode.HARD
        self.cap = None if customer.daily_cap is None else to_micros(customer.daily_cap, "daily cap")
        acap = account.daily_cap if account is not None else None
        self.acap = None if acap is None else to_micros(acap, "account daily cap")
        self.initial = package.pulse.initial if package else 60
        self.subsequent = package.pulse.subsequent if package else 60
        self.connect = to_micros(package.connect_fee, "connect fee") if package else 0
        self.bundle = package.free_minutes if package else 0
        self.incoming_rate = 0  # DID incoming rate (rate units / minute)
        self.incoming_ratio = (0, 1, 2)
        self.seal()

    def seal(self) -> None:
        """Pack the terms rate() unpacks in one step (call again after changing a field)."""
        self.simple_prepaid = self.hard and self.cap is None and self.acap is None and self.end is None
        self.rate_terms = (
            self.customer_id, self.package_name, self.currency, self.initial, self.subsequent,
            self.connect, self.bundle, self.internal,
        )  # fmt: skip
        limited = self.end is not None or self.cap is not None or self.acap is not None
        mode = _MODE_REFERENCE if limited else _MODE_PREPAID if self.hard else _MODE_UNLIMITED
        # the C hot path's view of this plan (indexes: T_* in rating/_rater_c.c)
        self.fast_terms = (
            self.pivot.stop or 0, self.pivot_get.__self__, tuple((h.stop, g.__self__) for h, g in self.lower),
            tuple((h.stop, g.__self__) for h, g in self.upper), self.blocks, mode, self.connect,
            self.initial, self.subsequent, self.bundle, self.internal, self.customer_id, self.package_name,
            self.currency,
        )  # fmt: skip


def _end_instant(day: object) -> datetime | None:
    if day is None:
        return None
    return datetime.combine(day, time(0), tzinfo=UTC) + timedelta(days=1)  # type: ignore[arg-type]


def max_paid_seconds(rate: int, budget_micros: int, initial: int, subsequent: int) -> int:
    """Longest pulse-aligned billed duration whose price (rounded half-up) fits the budget.

    price(B) = (2*rate*B + D) // 2D <= budget  <=>  B < (2D*budget + D) / (2*rate).
    """
    if budget_micros < 0:
        return -1
    raw = (_D2 * budget_micros + _D - 1) // (2 * rate)
    if raw < initial:
        return 0
    return initial + (raw - initial) // subsequent * subsequent


class Rater:
    """Authorise and rate calls against one RatingSetup (immutable; rebuild on reload)."""

    def __init__(self, setup: RatingSetup, accelerate: bool = True) -> None:
        """`accelerate=False` keeps the Python reference methods alone (the C hot path's yardstick)."""
        self.setup = setup
        terms_by_table = {name: row_terms(t) for name, t in setup.rate_tables.items()}
        self.tables: dict[str, CompiledTable] = {}
        used_packages = {a.package for a in setup.accounts.values()}
        for name, package in setup.packages.items():
            if name not in used_packages:
                continue
            if package.rate_table not in terms_by_table:
                raise SetupError(f"package {name!r}: unknown rate table {package.rate_table!r}")
            self.tables[name] = compile_package(
                package, terms_by_table[package.rate_table], setup.premium_categories
            )
        self._plans: dict[str, _Plan] = {}
        for acc in setup.accounts.values():
            customer = setup.customers.get(acc.customer_id)
            if customer is None:
                raise SetupError(f"account {acc.id!r}: unknown customer {acc.customer_id!r}")
            package = setup.packages.get(acc.package)
            if package is None:
                raise SetupError(f"account {acc.id!r}: unknown package {acc.package!r}")
            try:
                self._plans[acc.id] = _Plan(
                    acc, customer, package, self.tables[acc.package], _end_instant(acc.billing_end)
                )
            except MoneyError as exc:
                raise SetupError(f"account {acc.id!r}: {exc}") from exc
        self._dids: dict[str, _Plan] = {}
        for did in setup.dids.values():
            self._dids[did.number] = self._did_plan(did)
        if accelerate and _rater_c is not None:
            # the C functions answer what these bound reference methods would, or call them
            fast = {account_id: plan.fast_terms for account_id, plan in self._plans.items()}
            self.authorise = partial(_rater_c.authorise, fast, self.authorise)  # type: ignore[method-assign]
            self.rate = partial(_rater_c.rate, fast, self.rate)  # type: ignore[method-assign]

    def _did_plan(self, did: DidBilling) -> _Plan:
        customer = self.setup.customers.get(did.customer_id)
        if customer is None:
            raise SetupError(f"DID {did.number}: unknown customer {did.customer_id!r}")
        plan = _Plan(None, customer, None, None, _end_instant(did.billing_end))
        plan.initial, plan.subsequent = did.pulse.initial, did.pulse.subsequent
        try:
            plan.incoming_rate = rate_units(did.incoming_rate_per_minute, f"incoming rate of {did.number}")
            plan.incoming_ratio = amount_ratio(plan.incoming_rate)
            plan.seal()
        except MoneyError as exc:
            raise SetupError(str(exc)) from exc
        return plan

    # --- lookups -------------------------------------------------------------------------
    def plan_for(self, call: CallToRate) -> _Plan:
        """The billed party of a call (account, or the DID for inbound)."""
        if call.direction is _INBOUND:
            plan = self._dids.get(call.destination)
            if plan is None:
                raise UnknownAccount("DID", call.destination)
            return plan
        plan = self._plans.get(call.account_id)  # type: ignore[arg-type]
        if plan is None:
            raise UnknownAccount("account", call.account_id)
        return plan

    def customer_of(self, call: CallToRate) -> CustomerBilling:
        return self.plan_for(call).customer

    def capped(self, account_id: str) -> bool:
        """True when a daily cap (the customer's or the account's) limits the account's calls."""
        plan = self._plans.get(account_id)
        return plan is not None and (plan.cap is not None or plan.acap is not None)

    def free_minutes_bundle(self, account_id: str) -> int:
        plan = self._plans.get(account_id)
        return plan.bundle if plan else 0

    def match(self, account_id: str, destination: str) -> Route | None:
        """The tariff entry an account's package gives a destination (None: unrated)."""
        plan = self._plans.get(account_id)
        if plan is None:
            raise UnknownAccount("account", account_id)
        return plan.table.match(destination)  # type: ignore[union-attr]

    # --- setup time ----------------------------------------------------------------------
    def authorise(
        self,
        call: CallToRate,
        balance_micros: int = 0,
        spent_today_micros: int = 0,
        free_minutes_left: int = 0,
        account_spent_micros: int = 0,
    ) -> Authorisation:
        """Allowed or refused (with reason); for HARD balances or a daily cap, the max duration.

        Order of checks: unrated destination, blocked category, out-of-plan block, billing end (for
        every call through the trunk, in plan or not), then money (internal customers and free calls
        skip it), HARD balance <= 0, the customer's daily cap, the account's daily cap. The spends
        are what the day has cost so far plus what calls in progress hold (the caller's sums).
        """
        direction = call.direction
        if call.on_net or (direction is not _OUTBOUND and direction is not _FORWARDED):
            return self._authorise_other(call, balance_micros, spent_today_micros)
        plan = self._plans.get(call.account_id)  # type: ignore[arg-type]
        if plan is None:
            raise UnknownAccount("account", call.account_id)
        # longest-prefix match: CompiledTable.find, inlined (this is the hot path). No length check
        # needed: number[:L] of a shorter number is the number itself, which is then rightly its
        # own longest prefix if it is a key.
        number = call.destination
        route = plan.pivot_get(number[plan.pivot])
        if route is None or route[5]:
            for head, get in plan.lower if route is None else plan.upper:
                hit = get(number[head])
                if hit is not None:
                    route = hit
                    break
        if route is None or route[0] is None:
            return _REFUSALS[Refusal.NO_RATE]
        # route is a tariff entry (rating.tariff.Entry); index only the terms needed here: each
        # object loaded is a memory touch, and cold when destinations spread over a large table
        shape = route[4]
        flags = shape[9]
        if flags & plan.blocks:
            blocked = Refusal.BLOCKED_CATEGORY if flags & plan.blocks & PREMIUM else None
            return _refused(blocked or Refusal.OUT_OF_PLAN_BLOCKED, route)
        # before the free-call shortcut: an ended contract's included calls still cost the carrier
        end = plan.end
        if end is not None and call.start >= end:
            return _refused(Refusal.BILLING_ENDED, route)
        sp2 = route[3]
        if not sp2 or plan.internal:
            return _new(Authorisation, (True, None, None, route))
        if plan.simple_prepaid and balance_micros > 0:
            # the common prepaid case, inlined: longest pulse-aligned duration the balance pays
            budget = balance_micros - plan.connect
            if budget >= 0:
                raw = (shape[8] * budget + shape[7] - 1) // sp2
                initial = plan.initial
                if raw >= initial:
                    paid = raw - (raw - initial) % plan.subsequent  # = initial + whole steps
                    if free_minutes_left > 0 and plan.bundle:
                        paid += free_minutes_left * 60
                    return _new(Authorisation, (True, None, paid, route))
        ratio = (sp2, shape[7], shape[8])
        return self._money(
            plan,
            route,
            ratio,
            call,
            balance_micros,
            spent_today_micros,
            free_minutes_left,
            account_spent_micros,
        )

    def _authorise_other(self, call: CallToRate, balance_micros: int, spent_today: int) -> Authorisation:
        """Internal and on-net calls are free; inbound ones bill the DID's incoming rate."""
        if call.direction is not _INBOUND or call.on_net:
            return _ALLOWED_UNLIMITED
        plan = self._dids.get(call.destination)
        if plan is None:
            raise UnknownAccount("DID", call.destination)
        if plan.incoming_rate == 0 or plan.internal:
            return _ALLOWED_UNLIMITED
        return self._money(plan, None, plan.incoming_ratio, call, balance_micros, spent_today, 0)

    @staticmethod
    def _money(
        plan: _Plan,
        route: Entry | None,
        ratio: tuple[int, int, int],
        call: CallToRate,
        balance_micros: int,
        spent_today_micros: int,
        free_minutes_left: int,
        account_spent_micros: int = 0,
    ) -> Authorisation:
        """The checks that need money: billing end, HARD balance, daily caps, max duration: the
        longest pulse-aligned duration whose price fits the smallest of what is left (balance,
        customer cap, account cap); a cap reached exactly refuses the call."""
        end = plan.end
        if end is not None and call.start >= end:
            return _refused(Refusal.BILLING_ENDED, route)
        hard, cap, acap = plan.hard, plan.cap, plan.acap
        if not hard and cap is None and acap is None:
            return _new(Authorisation, (True, None, None, route))
        if hard and balance_micros <= 0:
            return _refused(Refusal.BALANCE_EXHAUSTED, route)
        if cap is not None and spent_today_micros >= cap:
            return _refused(Refusal.DAILY_CAP_REACHED, route)
        if acap is not None and account_spent_micros >= acap:
            return _refused(Refusal.ACCOUNT_DAILY_CAP_REACHED, route)
        budget = cap - spent_today_micros if cap is not None else balance_micros if hard else acap
        if hard and balance_micros < budget:
            budget = balance_micros
        if acap is not None and acap - account_spent_micros < budget:
            budget = acap - account_spent_micros
        # max_paid_seconds(), inlined: longest pulse-aligned duration the budget pays
        budget -= plan.connect
        paid = -1
        if budget >= 0:
            p2, q, q2 = ratio  # price(B) = (p2*B + q) // q2 <= budget  <=>  B < (q2*budget + q) / p2
            raw = (q2 * budget + q - 1) // p2
            initial = plan.initial
            paid = 0 if raw < initial else raw - (raw - initial) % plan.subsequent
        free_seconds = free_minutes_left * 60 if free_minutes_left > 0 and plan.bundle else 0
        if paid < 0 or (paid == 0 and free_seconds == 0):
            left = budget + plan.connect
            if hard and left == balance_micros:
                return _refused(Refusal.BALANCE_EXHAUSTED, route)
            if cap is not None and left == cap - spent_today_micros:
                return _refused(Refusal.DAILY_CAP_REACHED, route)
            return _refused(Refusal.ACCOUNT_DAILY_CAP_REACHED, route)
        return _new(Authorisation, (True, None, free_seconds + paid, route))

    # --- end of call ---------------------------------------------------------------------
    def rate(self, call: CallToRate, free_minutes_left: int = 0, route: object | None = None) -> CallRated:
        """Cost, price, margin, billed seconds and free minutes of a finished call.

        `free_minutes_left` is what the account's bundle has left this cycle (the caller reads
        it from the counter store); `route` may be the Authorisation's token (a tariff entry).
        """
        direction = call.direction
        if direction is _INBOUND:
            return self._rate_inbound(call)
        plan = self._plans.get(call.account_id)  # type: ignore[arg-type]
        if plan is None:
            raise UnknownAccount("account", call.account_id)
        if direction is _INTERNAL or call.on_net:
            pricing = Pricing.INTERNAL if direction is _INTERNAL else Pricing.ON_NET
            return CallRated(
                direction, plan.customer_id, call.account_id, plan.package_name, plan.currency,
                None, "on-net", "on_net", pricing, 0, 0, 0, 0,
            )  # fmt: skip
        if route is None:
            route = plan.table.find(call.destination)  # type: ignore[union-attr]
            if route is None:
                raise NoRate(call.destination, plan.package_name or "")
        prefix, destination, cp2, sp2, shape, _extended = route  # type: ignore[misc]
        category, pricing, cq, cq2, ci, cs, cconn, sq, sq2, _flags = shape
        (customer_id, package_name, currency, pi, ps, pconn, bundle, internal) = plan.rate_terms
        duration = call.duration
        if not call.answered:
            return _new(CallRated, (
                direction, customer_id, call.account_id, package_name, currency,
                prefix, destination, category, Pricing.UNANSWERED, 0, 0, 0, 0,
            ))  # fmt: skip
        # cost: carrier increments and carrier connect fee. Past the first increment,
        # i - (i - d) // s * s is i + ceil((d - i) / s) * s in fewer integer operations.
        if duration > ci:
            cb = duration if cs == 1 else ci - (ci - duration) // cs * cs
        else:
            cb = ci if duration > 0 else 0
        cost = (cp2 * cb + cq) // cq2 + cconn  # (0 + q) // 2q = 0 for a 0 s call
        if internal:
            sp2, pricing = 0, Pricing.INTERNAL
        used = 0
        rest = duration
        if sp2 and bundle and free_minutes_left > 0 and duration > 0:
            need = (duration + 59) // 60
            if need <= free_minutes_left:
                used, rest = need, 0
            else:
                used, rest = free_minutes_left, duration - free_minutes_left * 60
        # package pulse on the seconds the bundle did not cover
        if rest > pi:
            billed = rest if ps == 1 else pi - (pi - rest) // ps * ps
        else:
            billed = pi if rest > 0 else 0
        price = (sp2 * billed + sq) // sq2 + pconn if sp2 else 0
        return _new(CallRated, (
            direction, customer_id, call.account_id, package_name, currency,
            prefix, destination, category, pricing, billed, used, cost, price,
        ))  # fmt: skip

    def _rate_inbound(self, call: CallToRate) -> CallRated:
        plan = self._dids.get(call.destination)
        if plan is None:
            raise UnknownAccount("DID", call.destination)
        cid = plan.customer.id
        if not call.answered:
            pricing, billed = Pricing.UNANSWERED, 0
        else:
            pricing = Pricing.INTERNAL if plan.internal else Pricing.DID_INCOMING
            billed = billed_seconds(call.duration, plan.initial, plan.subsequent)
        p2, q, q2 = plan.incoming_ratio
        price = 0 if plan.internal else (p2 * billed + q) // q2
        return CallRated(
            _INBOUND, cid, call.account_id, None, plan.currency, call.destination, "incoming", "did",
            pricing, billed, 0, 0, price,
        )  # fmt: skip
