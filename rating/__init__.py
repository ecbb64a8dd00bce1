"""Pure money: tariffs (longest prefix), packages, pulse, free minutes, authorisation and rating.

Public API: build a `Rater` from a `RatingSetup` (rating.model); call `authorise` at setup and
`rate` at the end, or `rating.settlement.authorise_call/settle_call` with a CounterStore.
"""

from rating.events import Authorisation, CallRated, CallSettled, LowBalanceCrossed
from rating.model import (
    AccountBilling,
    BalanceMode,
    CallToRate,
    CustomerBilling,
    DidBilling,
    Direction,
    Package,
    Pricing,
    Pulse,
    RateRow,
    RateTable,
    RatingSetup,
    Refusal,
)
from rating.rater import Rater

__all__ = [
    "AccountBilling",
    "Authorisation",
    "BalanceMode",
    "CallRated",
    "CallSettled",
    "CallToRate",
    "CustomerBilling",
    "DidBilling",
    "Direction",
    "LowBalanceCrossed",
    "Package",
    "Pricing",
    "Pulse",
    "RateRow",
    "RateTable",
    "Rater",
    "RatingSetup",
    "Refusal",
]
