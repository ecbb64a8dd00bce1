"""route_outgoing: where a call an account places goes, what it shows, and every refusal."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routing import (
    Authorisation,
    AuthoriseRequest,
    CallState,
    DecisionKind,
    DialingRules,
    ForwardKind,
    RefusalCause,
    route_outgoing,
)
from routing.targets import MediaService, SipUri, TrunkNumber

from .helpers import MEDIA, account, platform

IDLE = CallState()
SETUP = platform()


def test_extension_is_internal_and_not_rated() -> None:
    setup = platform()
    alice = setup.accounts["acme-2001"]
    d = route_outgoing(setup, alice, "2002", IDLE)
    assert d.kind is DecisionKind.INTERNAL
    assert d.callee is setup.accounts["acme-2002"]
    assert d.caller_id == "2001"
    assert not d.rated


def test_external_goes_to_trunk_with_outgoing_number() -> None:
    setup = platform()
    alice = setup.accounts["acme-2001"]
    d = route_outgoing(setup, alice, "0612345678", IDLE)
    assert d.kind is DecisionKind.EXTERNAL
    assert d.normalised == "+33612345678"
    assert d.target == TrunkNumber("+33612345678", "carrier")
    assert d.caller_id == "+33140002001"
    assert d.rated


def test_outbound_prefix_stripped_for_trunk() -> None:
    setup = platform(account("2001"), dialing=DialingRules(outbound_prefix="9"))
    d = route_outgoing(setup, setup.accounts["acme-2001"], "900442079460000", IDLE)
    assert d.target == TrunkNumber("+442079460000", "carrier")


def test_own_did_is_on_net_and_free() -> None:
    setup = platform()
    alice = setup.accounts["acme-2001"]
    d = route_outgoing(setup, alice, "01 50 00 30 01", IDLE)
    assert d.kind is DecisionKind.ON_NET
    assert d.callee is setup.dids["+33150003001"]
    assert d.caller_id == "+33140002001"
    assert not d.rated


def test_short_codes() -> None:
    setup = platform()
    alice = setup.accounts["acme-2001"]
    conf = route_outgoing(setup, alice, "2020", IDLE)
    assert conf.kind is DecisionKind.SERVICE
    assert conf.target == MediaService(MEDIA, "conference", room="acme")
    menu = route_outgoing(setup, alice, "2222", IDLE)  # the owner's mailbox menu, not a deposit
    assert menu.target == MediaService(MEDIA, "mailbox", mailbox="acme-2001")
    support = route_outgoing(setup, alice, "2000", IDLE)  # configured as globex's DID: on-net
    assert support.kind is DecisionKind.ON_NET
    assert support.callee is setup.dids["+33150003001"]


def test_media_request_uri_user_names_the_service_and_its_box() -> None:
    """What the media service reads to tell a deposit from the owner's menu and a conference room."""
    assert MediaService(MEDIA, "voicemail", mailbox="acme/2001").user == "voicemail-acme-2001"
    assert MediaService(MEDIA, "mailbox", mailbox="my-co/2001").user == "mailbox-my-co-2001"
    assert MediaService(MEDIA, "conference", room="+33150003001").user == "conference-+33150003001"
    assert MediaService(MEDIA, "conference").user == "conference"


def test_support_as_uri_or_outside_number() -> None:
    from dataclasses import replace

    setup = platform()
    alice = setup.accounts["acme-2001"]
    d = route_outgoing(replace(setup, support="sip:help@support.example"), alice, "2000", IDLE)
    assert (d.kind, d.target) == (DecisionKind.SERVICE, SipUri("sip:help@support.example"))
    d = route_outgoing(replace(setup, support="+442079460000"), alice, "2000", IDLE)
    assert d.target == TrunkNumber("+442079460000", "carrier")
    assert not d.rated


def test_unknown_short_number_is_address_incomplete() -> None:
    setup = platform()
    d = route_outgoing(setup, setup.accounts["acme-2001"], "2999", IDLE)
    assert d.kind is DecisionKind.REFUSED
    assert (d.refusal.status, d.refusal.reason, d.refusal.cause) == (
        484,
        "Address Incomplete",
        RefusalCause.ADDRESS_INCOMPLETE,
    )


def test_premium_blocked_only_for_accounts_that_block_it() -> None:
    setup = platform(account("2001", block_premium=True), account("2002"))
    d = route_outgoing(setup, setup.accounts["acme-2001"], "0892680000", IDLE)
    assert d.kind is DecisionKind.REFUSED
    assert d.refusal.status == 403
    assert d.refusal.cause is RefusalCause.PREMIUM_BLOCKED
    assert "+33892680000" in d.refusal.warning
    ok = route_outgoing(setup, setup.accounts["acme-2002"], "0892680000", IDLE)
    assert ok.kind is DecisionKind.EXTERNAL


def test_out_of_plan_blocked_only_for_accounts_that_block_it() -> None:
    setup = platform(account("2001", block_out_of_plan=True), account("2002"))
    seen: list[AuthoriseRequest] = []

    def rater(req: AuthoriseRequest) -> Authorisation:
        seen.append(req)
        return Authorisation(out_of_plan=req.number.startswith("+44"), warning="international")

    d = route_outgoing(setup, setup.accounts["acme-2001"], "00442079460000", IDLE, rater)
    assert d.refusal.cause is RefusalCause.OUT_OF_PLAN
    assert d.refusal.status == 403
    assert seen == [AuthoriseRequest("acme", "acme-2001", "+442079460000")]
    assert route_outgoing(setup, setup.accounts["acme-2001"], "0612345678", IDLE, rater).rated
    assert route_outgoing(setup, setup.accounts["acme-2002"], "00442079460000", IDLE, rater).rated


def test_hard_balance_refusal_comes_from_the_hook() -> None:
    setup = platform()

    def broke(req: AuthoriseRequest) -> Authorisation:
        return Authorisation(False, 402, "Payment Required", "Balance exhausted")

    d = route_outgoing(setup, setup.accounts["acme-2001"], "0612345678", IDLE, broke)
    assert (d.refusal.status, d.refusal.reason, d.refusal.warning) == (
        402,
        "Payment Required",
        "Balance exhausted",
    )
    assert d.normalised == "+33612345678"


def test_max_duration_from_the_hook() -> None:
    setup = platform()
    d = route_outgoing(
        setup, setup.accounts["acme-2001"], "0612345678", IDLE, lambda r: Authorisation(max_duration=180)
    )
    assert d.max_duration == 180


def test_on_net_calls_never_ask_the_rater() -> None:
    setup = platform()

    def never(req: AuthoriseRequest) -> Authorisation:
        raise AssertionError("on-net calls are free")

    assert route_outgoing(setup, setup.accounts["acme-2001"], "0150003001", IDLE, never).kind is (
        DecisionKind.ON_NET
    )


def test_simultaneous_call_limit() -> None:
    setup = platform(account("2001", max_calls=2), account("2002"))
    alice = setup.accounts["acme-2001"]
    assert route_outgoing(setup, alice, "2002", CallState(active_calls={"acme-2001": 1})).callee
    d = route_outgoing(setup, alice, "0612345678", CallState(active_calls={"acme-2001": 2}))
    assert d.kind is DecisionKind.REFUSED
    assert d.refusal.cause is RefusalCause.CALL_LIMIT
    assert "(2)" in d.refusal.warning


def test_feature_code_is_not_subject_to_the_call_limit() -> None:
    setup = platform()
    busy = CallState(active_calls=lambda acc: 99)
    d = route_outgoing(setup, setup.accounts["acme-2001"], "*21*0612345678#", busy)
    assert d.kind is DecisionKind.FEATURE
    assert d.change.kind is ForwardKind.PERMANENT


@given(st.text(alphabet="0123456789+*# ", max_size=24))
def test_any_dialed_string_gets_a_decision(dialed: str) -> None:
    setup = SETUP
    d = route_outgoing(setup, setup.accounts["acme-2001"], dialed, IDLE)
    if d.kind is DecisionKind.REFUSED:
        assert 400 <= d.refusal.status < 700 and d.refusal.warning
    elif d.kind is DecisionKind.EXTERNAL:
        assert d.rated and d.target.number == d.normalised and d.normalised.startswith("+")
    else:
        assert not d.rated
