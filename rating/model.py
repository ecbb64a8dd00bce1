"""The rating model: plain frozen values the rest of the system builds and hands to the Rater.

These types are the contract with `config/` (which bridges YAML into them), the call controller
(which describes each call as a `CallToRate`) and `cdr/` (which stores `rating.events.CallRated`).
Money is `decimal.Decimal` here; the Rater converts it once, at build time, to exact integers.
Names are stable: extend with defaulted fields rather than renaming.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

ZERO = Decimal(0)


class Direction(StrEnum):
    """Who pays: outbound and forwarded legs bill the account, inbound bills the DID's customer."""

    OUTBOUND = "outbound"
    INBOUND = "inbound"
    INTERNAL = "internal"
    FORWARDED = "forwarded"


class BalanceMode(StrEnum):
    """SOFT balances may go negative; HARD (prepaid) ones cap each call's duration."""

    SOFT = "soft"
    HARD = "hard"


class Refusal(StrEnum):
    """Why authorisation refused a call (the proxy maps each to a SIP response and a CDR)."""

    NO_RATE = "no_rate"  # destination matches no prefix of the package's rate table
    BLOCKED_CATEGORY = "blocked_category"  # e.g. premium while the account blocks premium
    OUT_OF_PLAN_BLOCKED = "out_of_plan_blocked"
    BALANCE_EXHAUSTED = "balance_exhausted"  # HARD balance <= 0 or too low to pay one pulse
    DAILY_CAP_REACHED = "daily_cap_reached"
    ACCOUNT_DAILY_CAP_REACHED = "account_daily_cap_reached"  # the account's own daily cap
    BILLING_ENDED = "billing_ended"  # the call starts after the account's billing end date


class Pricing(StrEnum):
    """Which rule priced a call (recorded so invoices can explain a zero or an override)."""

    MARKUP = "markup"
    OVERRIDE = "override"
    FREE_ZONE = "free_zone"
    INCLUDED = "included"
    ON_NET = "on_net"
    INTERNAL = "internal"  # internal direction, or a customer flagged internal
    DID_INCOMING = "did_incoming"
    UNANSWERED = "unanswered"


@dataclass(frozen=True, slots=True)
class Pulse:
    """Billing increments in seconds: the first `initial` seconds, then steps of `subsequent`.

    Pulse(60, 60) bills per minute, Pulse(1, 1) per second, Pulse(30, 6) is the classic 30/6.
    """

    initial: int = 60
    subsequent: int = 60

    def __post_init__(self) -> None:
        if self.initial < 1 or self.subsequent < 1:
            raise ValueError(f"pulse increments must be >= 1 s, got {self.initial}/{self.subsequent}")


PER_SECOND = Pulse(1, 1)
PER_MINUTE = Pulse(60, 60)


@dataclass(frozen=True, slots=True)
class RateRow:
    """One tariff line: what the carrier charges the operator for destinations under `prefix`.

    `prefix` is E.164 with its '+' (e.g. "+336"). `carrier_pulse` and `connect_fee` are the
    carrier's terms (cost side); the customer's terms come from the Package.
    """

    prefix: str
    destination: str
    category: str
    cost_per_minute: Decimal
    carrier_pulse: Pulse = PER_SECOND
    connect_fee: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class RateTable:
    """A named tariff; the longest matching prefix wins."""

    name: str
    rows: tuple[RateRow, ...]


@dataclass(frozen=True, slots=True)
class Package:
    """The sell side attached to accounts.

    Sell price per minute = (cost + markup_fixed) x (1 + markup_percent / 100), unless an
    override, free zone or included category applies (precedence in docs/rating.md:
    override > free zone > included category > markup).
    """

    name: str
    rate_table: str  # key into RatingSetup.rate_tables
    markup_fixed: Decimal = ZERO  # per minute
    markup_percent: Decimal = ZERO
    pulse: Pulse = PER_MINUTE
    connect_fee: Decimal = ZERO  # sell connect fee, charged on answered priced calls
    overrides: Mapping[str, Decimal] = field(default_factory=dict)  # prefix -> sell price/min
    free_country_codes: frozenset[str] = frozenset()  # "33" or "+33"
    free_prefixes: frozenset[str] = frozenset()  # "+3314"
    free_cost_threshold: Decimal | None = None  # free when cost/min <= threshold
    included_categories: frozenset[str] = frozenset()  # pro: {"fixed"}; pro+: {"fixed", "mobile"}
    free_minutes: int = 0  # per billing cycle (calendar month, UTC), per account
    monthly_fee: Decimal = ZERO
    setup_fee: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class CustomerBilling:
    """The paying company: currency, balance mode and the limits that gate its calls."""

    id: str
    reference: str = ""  # external id printed on every billing output
    currency: str = "EUR"
    balance_mode: BalanceMode = BalanceMode.SOFT
    low_balance_threshold: Decimal = ZERO
    internal: bool = False  # demo/internal: calls recorded, never billed
    daily_cap: Decimal | None = None  # max spend per day (operator's time zone), None = no cap


@dataclass(frozen=True, slots=True)
class AccountBilling:
    """A SIP line as the rater sees it: who pays, which package, which blocks."""

    id: str
    customer_id: str
    package: str  # key into RatingSetup.packages
    block_premium: bool = False
    block_out_of_plan: bool = False
    billing_start: date | None = None  # setup fee month; monthly fees from here
    billing_end: date | None = None  # last billed day (inclusive); later calls are refused
    daily_cap: Decimal | None = None  # the account's own max spend per day, None = no cap


@dataclass(frozen=True, slots=True)
class DidBilling:
    """An inbound number: its fees and the per-minute rate its customer pays for incoming calls."""

    number: str  # E.164 with '+'
    customer_id: str
    setup_fee: Decimal = ZERO
    monthly_fee: Decimal = ZERO
    incoming_rate_per_minute: Decimal = ZERO
    pulse: Pulse = PER_MINUTE
    billing_start: date | None = None
    billing_end: date | None = None


@dataclass(frozen=True, slots=True)
class RatingSetup:
    """Everything the Rater is built from; config produces one per (re)load."""

    rate_tables: Mapping[str, RateTable]
    packages: Mapping[str, Package]
    customers: Mapping[str, CustomerBilling]
    accounts: Mapping[str, AccountBilling]
    dids: Mapping[str, DidBilling] = field(default_factory=dict)
    premium_categories: frozenset[str] = frozenset({"premium"})
    timezone: str = "UTC"  # the operator's: the day daily caps count in (rating.billing.timezone)


@dataclass(frozen=True, slots=True)
class CallToRate:
    """A call as the controller describes it, at setup (duration 0) and at its end.

    `account_id` is the billed account for outbound, forwarded and internal calls; for inbound
    calls `destination` is the called DID (E.164) and `account_id` may be None.
    `start` must be timezone-aware: billing days and cycles are taken in UTC.
    """

    direction: Direction
    account_id: str | None
    destination: str
    start: datetime
    on_net: bool = False
    answered: bool = True
    duration: int = 0  # seconds, answer to hang-up
