"""The hook through which the rater says yes/no to a billable destination (floor 1 siblings don't import
each other: the proxy passes ``rating``'s authoriser in, adapted to this signature)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuthoriseRequest:
    customer_id: str
    account_id: str
    number: str
    """E.164 destination, leaving through the trunk (on-net calls are never asked: they are free)."""


@dataclass(frozen=True, slots=True)
class Authorisation:
    """The rater's answer. Refused → routing answers ``status reason`` with ``warning`` as Warning.

    ``out_of_plan`` is information: routing refuses it only for accounts that block out-of-plan calls.
    ``max_duration`` (seconds) is what a prepaid balance or a daily spending cap pays for; the proxy
    ends the call then. ``hold_micros`` is what the call may cost at most (its price at
    ``max_duration``): held against the caps while the call is in progress (routing.toll_fraud).
    """

    allowed: bool = True
    status: int = 403
    reason: str = "Forbidden"
    warning: str = ""
    out_of_plan: bool = False
    max_duration: int | None = None
    hold_micros: int = 0
    cause: str = ""
    """Why it was refused, in the authoriser's words (counted and logged)."""


Authoriser = Callable[[AuthoriseRequest], Authorisation]

ALLOWED = Authorisation()


def allow_all(request: AuthoriseRequest) -> Authorisation:
    """Default hook: everything allowed, no duration cap (embedded setups without a rater)."""
    return ALLOWED
