"""The decision for a call an account places: where it goes, what caller ID it shows, or why not.

Order: feature code (not a call: no limit applies) → simultaneous-call limit → call-rate limit →
short code → own extension → on-net DID → outside number (destination blocklist, premium block, then
the rater's authorisation). A call placed counts in the account's rate windows (``placed``).
Internal and on-net calls are never rated; the proxy hands ``callee`` to ``plan_incoming``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from routing import refusals
from routing.authorise import Authoriser, AuthoriseRequest, allow_all
from routing.dialplan import (
    CONFERENCE_CODE,
    SUPPORT_CODE,
    VOICEMAIL_CODE,
    DestinationKind,
    classify,
    trunk_number,
)
from routing.feature_codes import ForwardingChange, looks_like_feature_code, parse_feature_code
from routing.model import AccountRoute, Did, RoutingSetup
from routing.numbering import is_premium, normalise
from routing.refusals import Refusal
from routing.state import CallState
from routing.targets import MediaService, SipUri, Target
from routing.toll_fraud import over_rate, placed_keys, rate_key, window_of


class DecisionKind(StrEnum):
    INTERNAL = "internal"
    """Another account of the same customer: ``callee`` is the AccountRoute."""
    ON_NET = "on_net"
    """One of the platform's DIDs: ``callee`` is the Did."""
    EXTERNAL = "external"
    """Out through the trunk: ``target`` is a TrunkNumber; rated."""
    SERVICE = "service"
    """A short code answered by a fixed target (media service, support URI/number)."""
    FEATURE = "feature"
    """A forwarding change: ``change``; no call is placed."""
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    dialed: str
    normalised: str = ""
    caller_id: str = ""
    rated: bool = False
    callee: AccountRoute | Did | None = None
    target: Target | None = None
    refusal: Refusal | None = None
    change: ForwardingChange | None = None
    max_duration: int | None = None
    hold_micros: int = 0
    placed: tuple[str, ...] = ()
    """Tallies the call adds one to when placed (its account's call-rate windows)."""


def _refused(dialed: str, refusal: Refusal, normalised: str = "") -> Decision:
    return Decision(DecisionKind.REFUSED, dialed, normalised=normalised, refusal=refusal)


def _support(setup: RoutingSetup, caller: AccountRoute, dialed: str) -> Decision:
    support = setup.support
    if support.startswith(("sip:", "sips:")):
        return Decision(
            DecisionKind.SERVICE, dialed, support, caller.presented_number, target=SipUri(support)
        )
    customer = setup.customers[caller.customer_id]
    e164 = normalise(customer.dialing, support) or support
    did = setup.dids.get(e164)
    if did is not None:
        return Decision(DecisionKind.ON_NET, dialed, e164, caller.presented_number, callee=did)
    target = trunk_number(setup, customer, e164)
    return Decision(DecisionKind.SERVICE, dialed, e164, caller.presented_number, target=target)


def route_outgoing(
    setup: RoutingSetup,
    caller: AccountRoute,
    dialed: str,
    state: CallState,
    authorise: Authoriser = allow_all,
) -> Decision:
    """Decide where a call from ``caller`` to ``dialed`` (the Request-URI user part) goes."""
    if looks_like_feature_code(dialed):
        parsed = parse_feature_code(setup, caller, dialed)
        if isinstance(parsed, Refusal):
            return _refused(dialed, parsed)
        return Decision(DecisionKind.FEATURE, dialed, change=parsed)

    if state.calls_of(caller.account_id) >= caller.max_calls:
        return _refused(dialed, refusals.call_limit(caller.max_calls))
    for limit in caller.rate_limits:
        index, into = window_of(limit, state.wall)
        current = state.tally(rate_key(caller.account_id, limit.window, index))
        previous = state.tally(rate_key(caller.account_id, limit.window, index - 1))
        if over_rate(limit, previous, current, into):
            return _refused(dialed, refusals.call_rate(limit.describe()))
    decision = _route(setup, caller, dialed, authorise)
    if decision.kind is DecisionKind.REFUSED or not caller.rate_limits:
        return decision
    return replace(decision, placed=placed_keys(caller.account_id, caller.rate_limits, state.wall))


def _route(setup: RoutingSetup, caller: AccountRoute, dialed: str, authorise: Authoriser) -> Decision:
    customer = setup.customers[caller.customer_id]
    dest = classify(setup, customer, dialed)
    kind = dest.kind
    if kind is DestinationKind.EXTENSION:
        return Decision(DecisionKind.INTERNAL, dialed, dest.number, caller.extension, callee=dest.account)
    if kind is DestinationKind.SHORT_CODE:
        if dest.number == SUPPORT_CODE:
            return _support(setup, caller, dialed)
        if dest.number == CONFERENCE_CODE:
            target = MediaService(setup.media_uri, "conference", room=caller.customer_id)
        else:
            assert dest.number == VOICEMAIL_CODE
            target = MediaService(setup.media_uri, "mailbox", mailbox=caller.account_id)  # its own menu
        return Decision(DecisionKind.SERVICE, dialed, dest.number, caller.extension, target=target)
    if kind is DestinationKind.INVALID:
        return _refused(dialed, refusals.address_incomplete(dialed))
    if kind is DestinationKind.DID:
        return Decision(DecisionKind.ON_NET, dialed, dest.number, caller.presented_number, callee=dest.did)

    number = dest.number
    blocked = caller.blocklist.blocking_prefix(number)
    if blocked is not None:
        return _refused(dialed, refusals.destination_blocked(number, blocked), number)
    if caller.block_premium and is_premium(customer.dialing, number):
        return _refused(dialed, refusals.premium_blocked(number), number)
    auth = authorise(AuthoriseRequest(caller.customer_id, caller.account_id, number))
    if not auth.allowed:
        warning = auth.warning or f"Call to {number} not authorised"
        refusal = Refusal(auth.status, auth.reason, warning, refusals.RefusalCause.NOT_AUTHORISED, auth.cause)
        return _refused(dialed, refusal, number)
    if auth.out_of_plan and caller.block_out_of_plan:
        return _refused(dialed, refusals.out_of_plan(number, auth.warning), number)
    return Decision(
        DecisionKind.EXTERNAL,
        dialed,
        number,
        caller.presented_number,
        rated=True,
        target=trunk_number(setup, customer, number),
        max_duration=auth.max_duration,
        hold_micros=auth.hold_micros,
    )
