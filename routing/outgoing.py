"""The decision for a call an account places: where it goes, what caller ID it shows, or why not.

Order: feature code (not a call: no limit applies) → simultaneous-call limit → call-rate limit →
short code → own extension → on-net DID → outside number (destination blocklist, premium block, then
the rater's authorisation). A call placed counts against its account and in its rate windows
(``admission``: what the adapter counts, and checks again platform-wide where hosts share the counts).
Internal and on-net calls are never rated; the proxy hands ``callee`` to ``plan_incoming``.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from routing.toll_fraud import Admission, admission


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
    admission: Admission | None = None
    """What the call counts when placed (against its account, in its call-rate windows) and the limits
    it was decided on (routing.toll_fraud); None for a refusal or a feature code."""


def _refused(dialed: str, refusal: Refusal, normalised: str = "") -> Decision:
    return Decision(DecisionKind.REFUSED, dialed, normalised=normalised, refusal=refusal)


def _support(setup: RoutingSetup, caller: AccountRoute, dialed: str, admit: Admission) -> Decision:
    support = setup.support
    if support.startswith(("sip:", "sips:")):
        return Decision(
            DecisionKind.SERVICE,
            dialed,
            support,
            caller.presented_number,
            target=SipUri(support),
            admission=admit,
        )
    customer = setup.customers[caller.customer_id]
    e164 = normalise(customer.dialing, support) or support
    did = setup.dids.get(e164)
    if did is not None:
        return Decision(
            DecisionKind.ON_NET, dialed, e164, caller.presented_number, callee=did, admission=admit
        )
    target = trunk_number(setup, customer, e164)
    return Decision(
        DecisionKind.SERVICE, dialed, e164, caller.presented_number, target=target, admission=admit
    )


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

    admit = _admit(caller, state)
    if isinstance(admit, Refusal):
        return _refused(dialed, admit)
    return _route(setup, caller, dialed, authorise, admit)


def route_to_account(caller: AccountRoute, callee: AccountRoute, dialed: str, state: CallState) -> Decision:
    """A call to ``sip:user@domain`` naming an account by its username (the AOR itself, not digits):
    the same limits as any call ``caller`` places, then ``callee`` directly."""
    admit = _admit(caller, state)
    if isinstance(admit, Refusal):
        return _refused(dialed, admit)
    return Decision(DecisionKind.INTERNAL, dialed, dialed, caller.extension, callee=callee, admission=admit)


def _admit(caller: AccountRoute, state: CallState) -> Admission | Refusal:
    """A call ``caller`` places: what it counts and is checked against, or its refusal when it is
    beyond ``caller``'s simultaneous-call or call-rate limits."""
    admit = admission(caller.account_id, caller.max_calls, caller.rate_limits, state.wall)
    placed, tally = admit.placed, state.tally
    refused = admit.refused(state.calls_of(caller.account_id) + 1, lambda key: tally(key) + (key in placed))
    return admit.refusal(refused) if refused else admit


def _route(
    setup: RoutingSetup, caller: AccountRoute, dialed: str, authorise: Authoriser, admit: Admission
) -> Decision:
    """Where the call goes; every decision but a refusal carries ``admit`` (no `replace`: a copy of
    the decision costs more than the rest of an internal call's routing)."""
    customer = setup.customers[caller.customer_id]
    dest = classify(setup, customer, dialed)
    kind = dest.kind
    if kind is DestinationKind.EXTENSION:
        return Decision(
            DecisionKind.INTERNAL, dialed, dest.number, caller.extension, callee=dest.account, admission=admit
        )
    if kind is DestinationKind.SHORT_CODE:
        if dest.number == SUPPORT_CODE:
            return _support(setup, caller, dialed, admit)
        if dest.number == CONFERENCE_CODE:
            target = MediaService(setup.media_uri, "conference", room=caller.customer_id)
        else:
            assert dest.number == VOICEMAIL_CODE
            target = MediaService(setup.media_uri, "mailbox", mailbox=caller.account_id)  # its own menu
        return Decision(
            DecisionKind.SERVICE, dialed, dest.number, caller.extension, target=target, admission=admit
        )
    if kind is DestinationKind.INVALID:
        return _refused(dialed, refusals.address_incomplete(dialed))
    if kind is DestinationKind.DID:
        return Decision(
            DecisionKind.ON_NET,
            dialed,
            dest.number,
            caller.presented_number,
            callee=dest.did,
            admission=admit,
        )

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
        admission=admit,
    )
