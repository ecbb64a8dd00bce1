"""Refusals carry the SIP answer: status, reason phrase and Warning text, plus a cause for the CDR."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RefusalCause(StrEnum):
    NOT_FOUND = "not_found"
    ADDRESS_INCOMPLETE = "address_incomplete"
    PREMIUM_BLOCKED = "premium_blocked"
    OUT_OF_PLAN = "out_of_plan"
    CALL_LIMIT = "call_limit"
    CALL_RATE = "call_rate"
    DESTINATION_BLOCKED = "destination_blocked"
    NOT_AUTHORISED = "not_authorised"
    BAD_FEATURE_CODE = "bad_feature_code"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The answer to send instead of routing: e.g. ``403 Forbidden`` with a human Warning text."""

    status: int
    reason: str
    warning: str
    cause: RefusalCause
    detail: str = ""
    """The authoriser's own cause when ``cause`` is NOT_AUTHORISED (e.g. ``daily_cap_reached``)."""

    @property
    def label(self) -> str:
        """What the refusal is counted and logged as."""
        return self.detail or self.cause.value


def not_found(dialed: str) -> Refusal:
    return Refusal(404, "Not Found", f"No such extension or number: {dialed}", RefusalCause.NOT_FOUND)


def address_incomplete(dialed: str) -> Refusal:
    return Refusal(
        484, "Address Incomplete", f"Cannot make a number out of {dialed!r}", RefusalCause.ADDRESS_INCOMPLETE
    )


def premium_blocked(number: str) -> Refusal:
    return Refusal(
        403,
        "Forbidden",
        f"Premium-rate numbers are blocked for this account: {number}",
        RefusalCause.PREMIUM_BLOCKED,
    )


def out_of_plan(number: str, why: str) -> Refusal:
    text = f"Destination out of plan is blocked for this account: {number}"
    return Refusal(403, "Forbidden", f"{text} ({why})" if why else text, RefusalCause.OUT_OF_PLAN)


def call_limit(limit: int) -> Refusal:
    return Refusal(403, "Forbidden", f"Simultaneous call limit reached ({limit})", RefusalCause.CALL_LIMIT)


def call_rate(limit: str) -> Refusal:
    return Refusal(403, "Forbidden", f"Call rate limit reached ({limit})", RefusalCause.CALL_RATE)


def destination_blocked(number: str, prefix: str) -> Refusal:
    return Refusal(
        403,
        "Forbidden",
        f"Destination {number} is blocked (prefix {prefix}: satellite, premium or operator-blocked range)",
        RefusalCause.DESTINATION_BLOCKED,
    )


def bad_feature_code(dialed: str, why: str) -> Refusal:
    return Refusal(484, "Address Incomplete", f"Feature code {dialed}: {why}", RefusalCause.BAD_FEATURE_CODE)
