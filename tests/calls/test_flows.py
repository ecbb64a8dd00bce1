"""Whole call flows through the call controller in memory (tests/calls/sim.py): a caller, the
controller with the real transaction layer, and the called parties exchanging parsed messages, the
clock moved by the test. Each case is a flow a PBX user knows; the wire tests (tests/proxy_sip) run
the same over sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing import Authorisation, AuthoriseRequest
from sipcore.message import Request
from tests.calls.sim import CARRIER, MEDIA, Party, Sim, carrier_invite

_ports: dict[str, int] = {}


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    return Sim(tmp_path)


def phone(
    sim: Sim, user: str, mode: str = "answer", answer_after: float = 0.0, register: bool = True
) -> Party:
    """A phone at its own address (a second phone of the same user gets the next port)."""
    key = f"{id(sim)}/{user}"
    _ports[key] = _ports.get(key, 5058) + 2
    party = Party(sim, user, (f"10.0.{int(user) % 250}.1", _ports[key]), mode, answer_after)
    if register:
        sim.register(party)
    return party


def finals(party: Party, call_id: str) -> list[int]:
    return [s for s in party.statuses(call_id) if s >= 200 or s in (180, 183)]


def only(items: list) -> object:
    assert len(items) == 1, items
    return items[0]


def test_basic_call(sim: Sim) -> None:
    alice, bruno = phone(sim, "1001"), phone(sim, "1002", answer_after=1)
    dlg = alice.call("1002")
    sim.advance(0)
    assert finals(alice, dlg.call_id) == [407, 180]
    sim.advance(1)
    assert finals(alice, dlg.call_id) == [407, 180, 200]
    invite = only(bruno.requests("INVITE"))
    assert invite.headers.get("record-route") == "<sip:192.0.2.1:5060;lr>"
    assert invite.headers.get_all("proxy-authorization") == []
    assert len(bruno.requests("ACK")) == 1  # the 2xx ACK went end to end through the proxy
    assert sim.accounts.busy_accounts() == {"demo/1001": 1, "demo/1002": 1}
    sim.advance(30)
    alice.in_dialog(dlg, "BYE")
    sim.advance(0)
    assert len(bruno.requests("BYE")) == 1
    assert [r.status for r in alice.responses(dlg.call_id) if r.cseq[1] == "BYE"] == [200]
    ended = only(sim.ended)
    assert (ended.disposition, ended.direction, ended.hangup_by, ended.duration) == (
        "answered",
        "internal",
        "caller",
        30,
    )
    assert (ended.account_id, ended.callee_account_id) == ("demo/1001", "demo/1002")
    assert ended.answer - ended.start == 1
    assert sim.accounts.busy_accounts() == {}
    assert sim.controller.calls == {}


def test_cancel_while_ringing(sim: Sim) -> None:
    alice, bruno = phone(sim, "1001"), phone(sim, "1002", mode="ring")
    dlg = alice.call("1002")
    sim.advance(2)
    alice.cancel(dlg)
    sim.advance(0)
    assert only(bruno.requests("CANCEL")).call_id == dlg.call_id
    assert finals(alice, dlg.call_id)[-1] == 487
    assert [r.status for r in alice.responses(dlg.call_id) if r.cseq[1] == "CANCEL"] == [200]
    ended = only(sim.ended)
    assert (ended.disposition, ended.hangup_by, ended.sip_status) == ("cancelled", "caller", 487)
    assert sim.accounts.busy_accounts() == {}


def test_a_2xx_crossing_the_cancel_is_relayed(sim: Sim) -> None:
    alice, bruno = phone(sim, "1001"), phone(sim, "1002", mode="ring")
    dlg = alice.call("1002")
    sim.advance(1)
    alice.cancel(dlg)  # the CANCEL and the callee's 200 cross on the wire
    bruno.answer(dlg.call_id)
    sim.advance(0)
    assert 200 in finals(alice, dlg.call_id) and 487 not in finals(alice, dlg.call_id)
    assert len(bruno.requests("ACK")) == 1  # the caller ACKs the 2xx it got
    alice.in_dialog(dlg, "BYE")
    sim.advance(0)
    assert only(sim.ended).disposition == "answered"


def test_a_cancelled_branch_that_never_answers_does_not_hold_the_caller(sim: Sim) -> None:
    alice, bruno = phone(sim, "1001"), phone(sim, "1002", mode="ring")
    dlg = alice.call("1002")
    sim.advance(1)
    bruno.mode = "silent"
    sim.parties.pop(bruno.addr)  # it vanishes: the CANCEL gets no answer
    alice.cancel(dlg)
    sim.advance(3.9)
    assert 487 not in finals(alice, dlg.call_id)
    sim.advance(0.2)  # CANCEL_GRACE (4 s) passed
    assert finals(alice, dlg.call_id)[-1] == 487
    assert only(sim.ended).disposition == "cancelled"


def test_busy_forward(sim: Sim) -> None:
    alice, busy, target = phone(sim, "1001"), phone(sim, "1004", mode="busy"), phone(sim, "1005")
    dlg = alice.call("1004")
    sim.advance(0)
    assert len(busy.requests("INVITE")) == 1 and len(busy.requests("ACK")) == 1  # 486 ACKed hop by hop
    forwarded = only(target.requests("INVITE"))
    assert "reason=user-busy" in (forwarded.headers.get("diversion") or "")
    assert finals(alice, dlg.call_id)[-1] == 200
    alice.in_dialog(dlg, "BYE")
    sim.advance(0)
    assert (only(sim.ended).disposition, only(sim.ended).callee_account_id) == ("answered", "demo/1005")


def test_no_answer_forward_after_the_delay(sim: Sim) -> None:
    alice, own, target = phone(sim, "1001"), phone(sim, "1006", mode="ring"), phone(sim, "1005", mode="ring")
    dlg = alice.call("1006")
    sim.advance(2.9)
    assert target.requests("INVITE") == []
    sim.advance(0.2)
    forwarded = only(target.requests("INVITE"))
    assert "reason=no-answer" in (forwarded.headers.get("diversion") or "")
    assert only(own.requests("CANCEL")).call_id == dlg.call_id  # the own phone stops ringing
    target.answer(dlg.call_id)
    sim.advance(0)
    assert finals(alice, dlg.call_id)[-1] == 200


def test_unreachable_forward_when_not_registered(sim: Sim) -> None:
    alice, target = phone(sim, "1001"), phone(sim, "1005")
    phone(sim, "1007", register=False)
    dlg = alice.call("1007")
    sim.advance(0)
    assert "reason=unavailable" in (only(target.requests("INVITE")).headers.get("diversion") or "")
    assert finals(alice, dlg.call_id)[-1] == 200


def test_follow_me_staggered_own_phone_silent(sim: Sim) -> None:
    alice, own = phone(sim, "1001"), phone(sim, "1008")
    first, second = phone(sim, "1002", mode="ring"), phone(sim, "1003", mode="ring")
    dlg = alice.call("1008")
    sim.advance(0)
    assert len(first.requests("INVITE")) == 1 and second.requests("INVITE") == []
    sim.advance(1.9)
    assert second.requests("INVITE") == []
    sim.advance(0.2)
    assert len(second.requests("INVITE")) == 1  # 2 s after the first
    second.answer(dlg.call_id)
    sim.advance(0)
    assert only(first.requests("CANCEL")).call_id == dlg.call_id
    assert own.requests("INVITE") == []
    assert finals(alice, dlg.call_id)[-1] == 200


def test_voicemail_as_last_resort(sim: Sim) -> None:
    alice, own = phone(sim, "1001"), phone(sim, "1009", mode="ring")
    media = Party(sim, "voicemail", MEDIA)
    dlg = alice.call("1009")
    sim.advance(2.1)
    invite = only(media.requests("INVITE"))
    assert invite.uri.startswith("sip:voicemail") and invite.uri.endswith(f"@{MEDIA[0]}:{MEDIA[1]}")
    assert only(own.requests("CANCEL")).call_id == dlg.call_id
    assert finals(alice, dlg.call_id)[-1] == 200


def test_parallel_group_from_the_carrier(sim: Sim) -> None:
    carrier = Party(sim, "carrier", CARRIER)
    bruno, chloe = phone(sim, "1002", mode="ring"), phone(sim, "1003", mode="ring")
    dlg = carrier_invite(carrier, "+33184000002", "+33699000001")
    sim.advance(0)
    assert only(bruno.requests("INVITE")).call_id == only(chloe.requests("INVITE")).call_id == dlg.call_id
    chloe.answer(dlg.call_id)
    sim.advance(0)
    assert only(bruno.requests("CANCEL")).call_id == dlg.call_id
    assert finals(carrier, dlg.call_id)[-1] == 200
    carrier.in_dialog(dlg, "BYE")
    sim.advance(0)
    ended = only(sim.ended)
    assert (ended.direction, ended.did, ended.callee_account_id) == ("inbound", "+33184000002", "demo/1003")


def test_sequential_group_rings_one_after_the_other(sim: Sim) -> None:
    carrier = Party(sim, "carrier", CARRIER)
    bruno, chloe = phone(sim, "1002", mode="ring"), phone(sim, "1003", mode="ring")
    dlg = carrier_invite(carrier, "+33184000003", "+33699000001")
    sim.advance(4.9)
    assert len(bruno.requests("INVITE")) == 1 and chloe.requests("INVITE") == []
    sim.advance(0.2)
    assert only(bruno.requests("CANCEL")).call_id == dlg.call_id
    assert len(chloe.requests("INVITE")) == 1


def test_cut_off_at_max_duration(tmp_path: Path) -> None:
    sim = Sim(tmp_path, max_call_duration=10)
    alice, bruno = phone(sim, "1001"), phone(sim, "1002")
    dlg = alice.call("1002")
    sim.advance(9.9)
    assert alice.requests("BYE") == [] and bruno.requests("BYE") == []
    sim.advance(0.2)
    assert only(alice.requests("BYE")).call_id == only(bruno.requests("BYE")).call_id == dlg.call_id
    assert 'text="Call duration limit"' in (bruno.requests("BYE")[0].headers.get("reason") or "")
    ended = only(sim.ended)
    assert (ended.hangup_by, ended.duration) == ("system", 10)


def test_prepaid_cut_off_at_the_granted_duration(tmp_path: Path) -> None:
    def authorise(request: AuthoriseRequest) -> Authorisation:
        return Authorisation(True, max_duration=5)

    sim = Sim(tmp_path, authorise=authorise)
    alice, carrier = phone(sim, "1001"), Party(sim, "carrier", CARRIER)
    dlg = alice.call("0612345678")
    sim.advance(0)
    invite = only(carrier.requests("INVITE"))
    assert invite.uri == "sip:+33612345678@carrier.sim:5060"  # sent to the address its name resolves to
    sim.advance(5.1)
    assert len(carrier.requests("BYE")) == 1 and len(alice.requests("BYE")) == 1
    ended = only(sim.ended)
    assert (ended.direction, ended.hangup_by, ended.duration, ended.rated) == ("outbound", "system", 5, True)
    assert dlg.call_id == ended.call_id


def test_a_2xx_never_acked_ends_the_call(sim: Sim) -> None:
    alice, bruno = phone(sim, "1001"), phone(sim, "1002")
    alice.auto_ack = False
    alice.call("1002")
    sim.advance(31)
    assert bruno.requests("BYE") == []
    sim.advance(1.5)
    assert len(bruno.requests("BYE")) == 1
    assert only(sim.ended).hangup_by == "system"
    assert sim.accounts.busy_accounts() == {}


def test_in_dialog_requests_both_ways(sim: Sim) -> None:
    alice, bruno = phone(sim, "1001"), phone(sim, "1002")
    dlg = alice.call("1002")
    sim.advance(0)
    alice.in_dialog(dlg, "INFO")
    alice.in_dialog(dlg, "INVITE")  # a re-INVITE (hold, codec change)
    sim.advance(0)
    assert len(bruno.requests("INFO")) == 1
    assert [r.status for r in alice.responses(dlg.call_id) if r.cseq[1] == "INFO"] == [200]
    assert len([r for r in bruno.requests("INVITE") if r.to_tag]) == 1
    back = bruno.callee_dialog(dlg.call_id)
    bruno.in_dialog(back, "BYE")
    sim.advance(0)
    assert len(alice.requests("BYE")) == 1
    assert only(sim.ended).hangup_by == "callee"


@pytest.mark.parametrize(
    ("mode", "header"), [("challenge", "proxy-authorization"), ("challenge401", "authorization")]
)
def test_trunk_challenge_answered_with_the_trunk_credentials(sim: Sim, mode: str, header: str) -> None:
    alice, carrier = phone(sim, "1001"), Party(sim, "carrier", CARRIER, mode=mode)
    dlg = alice.call("0612345678")
    sim.advance(0)
    first, second = carrier.requests("INVITE")
    assert first.headers.get_all("proxy-authorization") == first.headers.get_all("authorization") == []
    creds = second.headers.get_all(header)
    assert len(creds) == 1 and 'username="trunkuser"' in creds[0] and 'realm="carrier"' in creds[0]
    assert second.cseq[0] == first.cseq[0] + 1
    assert finals(alice, dlg.call_id)[-1] == 200
    assert not {401, 407} & set(finals(alice, dlg.call_id)[1:])  # the carrier's challenge stays here


def test_trunk_that_does_not_resolve_fails_the_call(sim: Sim) -> None:
    sim.dns.clear()
    alice = phone(sim, "1001")
    dlg = alice.call("0612345678")
    sim.advance(0)
    assert finals(alice, dlg.call_id)[-1] == 480
    assert only(sim.ended).disposition == "no_answer"


def test_refused_call_ends_with_its_event(sim: Sim) -> None:
    capped, chloe = phone(sim, "1012"), phone(sim, "1003")
    phone(sim, "1002")
    first = capped.call("1002")
    sim.advance(0)
    second = capped.call("1003")
    sim.advance(0)
    assert finals(capped, second.call_id)[-1] == 403
    refused = sim.ended[-1]
    assert (refused.disposition, refused.sip_status, refused.call_id) == ("refused", 403, second.call_id)
    assert chloe.requests("INVITE") == []
    assert finals(capped, first.call_id)[-1] == 200


def test_a_call_to_an_account_by_its_username_keeps_the_callers_limits(sim: Sim) -> None:
    """``sip:reception@domain`` names the account itself (not digits): still a call placed by 1012,
    refused at its ``max_calls`` like a call by extension, and counted when it is let through."""
    capped = phone(sim, "1012")
    reception = Party(sim, "reception", ("10.0.13.1", 5060))
    sim.register(reception)
    phone(sim, "1002")
    first = capped.call("1002")
    sim.advance(0)
    second = capped.call("reception")
    sim.advance(0)
    assert finals(capped, second.call_id)[-1] == 403
    assert reception.requests("INVITE") == []
    capped.in_dialog(capped.dialogs[first.call_id], "BYE")
    sim.advance(1)
    third = capped.call("reception")
    sim.advance(0)
    assert finals(capped, third.call_id)[-1] == 200
    assert len(reception.requests("INVITE")) == 1
    fourth = capped.call("1002")  # the call by username counts against 1012's limit
    sim.advance(0)
    assert finals(capped, fourth.call_id)[-1] == 403


def test_call_waiting_off_gives_busy(sim: Sim) -> None:
    alice, busy_one, bruno = phone(sim, "1001"), phone(sim, "1011"), phone(sim, "1002")
    bruno.call("1011")
    sim.advance(0)
    dlg = alice.call("1011")
    sim.advance(0)
    assert finals(alice, dlg.call_id)[-1] == 486
    assert len(busy_one.requests("INVITE")) == 1


def test_feature_code_sets_forwarding(sim: Sim) -> None:
    alice, bruno, chloe = phone(sim, "1001"), phone(sim, "1002"), phone(sim, "1003")
    code = alice.call("*21*1003#")
    sim.advance(0)
    assert finals(alice, code.call_id)[-1] == 486
    dlg = bruno.call("1001")
    sim.advance(0)
    assert alice.requests("INVITE") == []
    assert only(chloe.requests("INVITE")).call_id == dlg.call_id


def test_contacts_looked_up_later(sim: Sim) -> None:
    """A shared location store answers after a round trip: the call waits for it, a CANCEL before it
    answers means the phone never rings."""
    alice, bruno = phone(sim, "1001"), phone(sim, "1002")
    sim.hold_lookups = True
    dlg = alice.call("1002")
    sim.advance(0)
    assert bruno.requests("INVITE") == [] and len(sim.held) == 1
    sim.release()
    assert len(bruno.requests("INVITE")) == 1
    assert finals(alice, dlg.call_id)[-1] == 200
    chloe = phone(sim, "1003", mode="ring")
    late = alice.call("1003")
    sim.advance(0)
    alice.cancel(late)
    sim.advance(0)
    sim.release()
    assert chloe.requests("INVITE") == []
    assert finals(alice, late.call_id)[-1] == 487


def test_forked_branches_to_every_contact(sim: Sim) -> None:
    alice = phone(sim, "1001")
    desk, soft = phone(sim, "1002", mode="ring"), phone(sim, "1002", mode="ring")
    dlg = alice.call("1002")
    sim.advance(0)
    assert only(desk.requests("INVITE")).call_id == only(soft.requests("INVITE")).call_id
    soft.answer(dlg.call_id)
    sim.advance(0)
    assert only(desk.requests("CANCEL")).call_id == dlg.call_id
    assert isinstance(only(soft.requests("ACK")), Request)


def test_a_call_cancelled_while_the_trunk_name_resolves_never_reaches_the_carrier(sim: Sim) -> None:
    alice, carrier = phone(sim, "1001"), Party(sim, "carrier", CARRIER)
    sim.hold_lookups = True
    dlg = alice.call("0612345678")
    sim.advance(0)
    alice.cancel(dlg)
    sim.advance(0)
    sim.release()
    assert carrier.requests("INVITE") == []
    assert finals(alice, dlg.call_id)[-1] == 487
    assert only(sim.ended).disposition == "cancelled"
