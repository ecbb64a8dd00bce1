"""GSM-style forwarding feature codes (``*21*<number>#`` set, ``#21#`` clear), from a configurable table.

Dialing one yields a :class:`ForwardingChange`; the proxy applies it to the forwarding store (which
persists it) and answers the phone. The target is stored in routable form: an extension of the
customer or an E.164 number.
"""

from __future__ import annotations

from dataclasses import dataclass

from routing import refusals
from routing.dialplan import DestinationKind, classify
from routing.model import AccountRoute, ForwardKind, RoutingSetup
from routing.numbering import clean
from routing.refusals import Refusal


@dataclass(frozen=True, slots=True)
class ForwardingChange:
    """Set (``target``) or clear (``target is None``) forwarding ``kind`` of an account."""

    account_id: str
    kind: ForwardKind
    target: str | None


def looks_like_feature_code(dialed: str) -> bool:
    return dialed[:1] in ("*", "#")


def parse_feature_code(setup: RoutingSetup, account: AccountRoute, dialed: str) -> ForwardingChange | Refusal:
    """Read a dialed feature code for ``account``; a Refusal says why it was not understood."""
    digits = clean(dialed)
    for code in setup.feature_codes:
        if digits == code.clear_code:
            return ForwardingChange(account.account_id, code.kind, None)
        if digits.startswith(code.set_prefix) and digits.endswith("#"):
            raw = digits[len(code.set_prefix) : -1]
            if not raw:
                return refusals.bad_feature_code(dialed, "no number given")
            customer = setup.customers[account.customer_id]
            dest = classify(setup, customer, raw)
            if dest.kind is DestinationKind.INVALID:
                return refusals.bad_feature_code(dialed, f"{raw!r} is not a number")
            if dest.kind is DestinationKind.SHORT_CODE:
                return refusals.bad_feature_code(dialed, f"cannot forward to short code {raw}")
            if dest.account is not None and dest.account.account_id == account.account_id:
                return refusals.bad_feature_code(dialed, "cannot forward an account to itself")
            return ForwardingChange(account.account_id, code.kind, dest.number)
    return refusals.bad_feature_code(dialed, "unknown code")
