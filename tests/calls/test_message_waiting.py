"""Message waiting through the call controller in memory (tests/calls/sim.py): a phone's SUBSCRIBE to
its own mailbox reaches the media service, the dialog's NOTIFYs come back over the phone's flow (the
flow token in our Record-Route), other packages and other people's mailboxes are refused, and the
media service's unsolicited NOTIFY reaches every registered contact. The wire tests
(tests/proxy_sip/test_message_waiting.py) run the same over sockets."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from calls.subscriptions import FlowTokens
from sipcore.flow import Flow
from sipcore.message import Request, parse
from tests.calls.sim import DOMAIN, MEDIA, PROXY, Party, Sim

MEDIA_AT = f"{MEDIA[0]}:{MEDIA[1]}"


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    return Sim(tmp_path)


def behind_nat(sim: Sim, user: str, port: int = 40000) -> Party:
    """A phone whose Contact names a private address: only its flow (source address) reaches it."""
    party = Party(sim, user, (f"203.0.113.{int(user) % 250}", port))
    party.contact_host = ("192.168.1.10", 5060)
    sim.register(party)
    return party


def statuses(party: Party, call_id: str, method: str) -> list[int]:
    return [r.status for r in party.responses(call_id) if r.cseq[1] == method]


def only(items: list) -> object:
    assert len(items) == 1, items
    return items[0]


def unsolicited(media: Party, box: str, source: Party | None = None, event: str = "message-summary") -> str:
    """The media service's NOTIFY for phones that never subscribe (no To tag), from ``source``."""
    sender = source or media
    call_id = f"mwi-{secrets.token_hex(4)}"
    text = (
        f"NOTIFY sip:mailbox-{box}@{PROXY[0]}:{PROXY[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sender.addr[0]}:{sender.addr[1]};branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\n"
        f"From: <sip:media@{MEDIA_AT}>;tag=m1\r\nTo: <sip:mailbox-{box}@{PROXY[0]}>\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 NOTIFY\r\nContact: <sip:media@{MEDIA_AT}>\r\nEvent: {event}\r\nSubscription-State: active\r\n"
        "Content-Type: application/simple-message-summary\r\nContent-Length: 46\r\n\r\n"
        "Messages-Waiting: yes\r\nVoice-Message: 2/0 (0/0)\r\n"
    )
    sender.send(parse(text.encode()))
    return call_id


def test_subscribe_reaches_the_mailbox_and_notify_comes_back_over_the_flow(sim: Sim) -> None:
    alice, media = behind_nat(sim, "1001"), Party(sim, "media", MEDIA)
    dlg = alice.subscribe("1001")
    sim.advance(0)
    assert statuses(alice, dlg.call_id, "SUBSCRIBE") == [407, 200]
    sub = only(media.requests("SUBSCRIBE"))
    assert isinstance(sub, Request)
    assert sub.uri == f"sip:mailbox-demo-1001@{MEDIA_AT}"
    assert sub.headers.get_all("proxy-authorization") == []
    assert sub.headers.get_all("p-asserted-identity") == [f"<sip:1001@{DOMAIN}>"]
    [rr] = sub.headers.get_all("record-route")
    assert rr.startswith("<sip:") and "@192.0.2.1:5060;lr>" in rr  # our address, a flow token as user
    assert dlg.route_set == [rr]  # the phone's later requests come through us too
    media.notify(dlg.call_id)
    sim.advance(0)
    notify = only(alice.requests("NOTIFY"))  # at 203.0.113.x:40000, not at the Contact's 192.168.1.10
    assert notify.uri == "sip:1001@192.168.1.10:5060"  # the Request-URI is left as the media service sent it
    assert statuses(media, dlg.call_id, "NOTIFY") == [200]
    assert not any(to[0] == "192.168.1.10" for to, _, _ in sim.log)
    alice.in_dialog(dlg, "SUBSCRIBE", extra="Event: message-summary\r\nExpires: 0\r\n")  # unsubscribe
    sim.advance(0)
    refresh = media.requests("SUBSCRIBE")[-1]
    assert refresh.to_tag == media.tag and refresh.headers.get("expires") == "0"
    assert statuses(alice, dlg.call_id, "SUBSCRIBE") == [407, 200, 200]
    assert sim.ended == [] and sim.controller.calls == {}  # a subscription is no call


@pytest.mark.parametrize("user", ["2222", "1001"])
def test_the_voicemail_code_and_the_own_number_name_the_own_mailbox(sim: Sim, user: str) -> None:
    alice, media = behind_nat(sim, "1001"), Party(sim, "media", MEDIA)
    dlg = alice.subscribe(user)
    sim.advance(0)
    assert statuses(alice, dlg.call_id, "SUBSCRIBE")[-1] == 200
    assert only(media.requests("SUBSCRIBE")).uri == f"sip:mailbox-demo-1001@{MEDIA_AT}"


def test_someone_elses_mailbox_is_forbidden(sim: Sim) -> None:
    alice, media = behind_nat(sim, "1001"), Party(sim, "media", MEDIA)
    dlg = alice.subscribe("1002")
    sim.advance(0)
    assert statuses(alice, dlg.call_id, "SUBSCRIBE") == [407, 403]
    assert media.requests("SUBSCRIBE") == []


@pytest.mark.parametrize("event", ["presence", "dialog", ""])
def test_other_event_packages_get_489_without_a_challenge(sim: Sim, event: str) -> None:
    alice, media = behind_nat(sim, "1001"), Party(sim, "media", MEDIA)
    dlg = alice.subscribe("1002", event=event)
    sim.advance(0)
    [resp] = [r for r in alice.responses(dlg.call_id)]
    assert resp.status == 489 and resp.headers.get("allow-events") == "message-summary"
    assert media.requests("SUBSCRIBE") == []


def test_a_carrier_cannot_subscribe(sim: Sim) -> None:
    carrier = Party(sim, "carrier", ("192.0.2.2", 5060))
    dlg = carrier.subscribe("1001", auth=True)
    sim.advance(0)
    assert statuses(carrier, dlg.call_id, "SUBSCRIBE") == [403]


def test_a_token_opens_only_for_its_dialog(sim: Sim) -> None:
    """A NOTIFY carrying the token of someone else's subscription (another To tag) is routed by its
    Request-URI as any in-dialog request, never over the subscriber's flow."""
    alice, media = behind_nat(sim, "1001"), Party(sim, "media", MEDIA)
    dlg = alice.subscribe("1001")
    sim.advance(0)
    sub = media.subscriptions[dlg.call_id]
    sub.headers.set("from", f"<sip:1001@{DOMAIN}>;tag=another-dialog")
    media.notify(dlg.call_id)
    sim.advance(0)
    assert alice.requests("NOTIFY") == []


def test_unsolicited_notify_reaches_every_contact(sim: Sim) -> None:
    media = Party(sim, "media", MEDIA)
    desk, soft = behind_nat(sim, "1002", 40000), behind_nat(sim, "1002", 40002)
    call_id = unsolicited(media, "demo-1002")
    sim.advance(0)
    assert statuses(media, call_id, "NOTIFY") == [200]
    for phone in (desk, soft):
        notify = only(phone.requests("NOTIFY"))
        assert notify.uri == "sip:1002@192.168.1.10:5060"  # its registered Contact, sent over its flow
        assert notify.headers.get("to") == f"<sip:1002@{DOMAIN}>"
        assert notify.to_tag is None and notify.call_id == call_id
        assert len(notify.vias) == 1  # ours alone: the answers stop at the proxy
        assert notify.body.startswith(b"Messages-Waiting: yes")
    assert [(n.account_id, n.status, n.local) for n in sim.notified] == [("demo/1002", 200, False)] * 2
    assert len(media.responses(call_id)) == 1  # the phones' 200s were not relayed


def test_unsolicited_notify_waits_for_a_shared_store(sim: Sim) -> None:
    media, bruno = Party(sim, "media", MEDIA), behind_nat(sim, "1002")
    sim.hold_lookups = True
    call_id = unsolicited(media, "demo-1002")
    sim.advance(0)
    assert media.responses(call_id) == []
    sim.release()
    assert statuses(media, call_id, "NOTIFY") == [200]
    assert len(bruno.requests("NOTIFY")) == 1


def test_unsolicited_notify_answers(sim: Sim) -> None:
    media = Party(sim, "media", MEDIA)
    nobody = unsolicited(media, "demo-1003")  # an account with no registered phone
    unknown = unsolicited(media, "demo-9999")
    menu = unsolicited(media, "demo-1003", event="presence")
    sim.advance(0)
    assert statuses(media, nobody, "NOTIFY") == [480]
    assert statuses(media, unknown, "NOTIFY") == [404]
    assert statuses(media, menu, "NOTIFY") == [489]


def test_unsolicited_notify_from_anyone_else_is_forbidden(sim: Sim) -> None:
    media, bruno = Party(sim, "media", MEDIA), behind_nat(sim, "1002")
    impostor = Party(sim, "impostor", (MEDIA[0], 5081))  # the media host, another port
    call_id = unsolicited(media, "demo-1002", source=impostor)
    sim.advance(0)
    assert statuses(impostor, call_id, "NOTIFY") == [403]
    assert bruno.requests("NOTIFY") == []


def test_a_copy_nobody_answers_is_counted_unreachable(sim: Sim) -> None:
    media, bruno = Party(sim, "media", MEDIA), behind_nat(sim, "1002")
    sim.parties.pop(bruno.addr)  # registered, then gone
    unsolicited(media, "demo-1002")
    sim.advance(40)
    assert [(n.status, n.local) for n in sim.notified] == [(408, True)]


def test_mailbox_call_and_voicemail_deposit_say_so_in_the_cdr(sim: Sim) -> None:
    """2222 is the caller's own menu (mailbox-), a no-answer forward a deposit (voicemail-); both are
    answered on-net calls whose CDR names the service and the box."""
    media = Party(sim, "media", MEDIA)
    alice = behind_nat(sim, "1001")
    menu = alice.call("2222")
    sim.advance(0)
    assert only(media.requests("INVITE")).uri == f"sip:mailbox-demo-1001@{MEDIA_AT}"
    alice.in_dialog(menu, "BYE")
    sim.advance(0)
    sim.register(Party(sim, "1009", ("10.0.9.1", 5060), mode="ring"))  # no answer: voicemail after 2 s
    deposit = alice.call("1009")
    sim.advance(2.1)
    invite = media.requests("INVITE")[-1]
    assert invite.uri == f"sip:voicemail-demo-1009@{MEDIA_AT}"
    assert invite.headers.get_all("p-asserted-identity") == [f"<sip:1001@{DOMAIN}>"]
    alice.in_dialog(deposit, "BYE")
    sim.advance(0)
    got = [(e.direction, e.dialed, e.normalised, e.disposition) for e in sim.ended]
    assert got == [
        ("internal", "2222", "mailbox-demo-1001", "answered"),
        ("internal", "1009", "voicemail-demo-1009", "answered"),
    ]


def test_flow_tokens() -> None:
    tokens = FlowTokens(b"k" * 32)
    udp = Flow("udp", ("203.0.113.5", 40000), ("192.0.2.1", 5060))
    tcp = Flow("tcp", ("2001:db8::5", 50123), ("2001:db8::1", 5060), "w1-tcp-7")
    for flow in (udp, tcp):
        token = tokens.seal(flow, "tag1")
        assert token.replace("-", "").replace("_", "").isalnum()  # URI user-safe as it is
        assert tokens.open(token, "tag1") == flow
        assert tokens.open(token, "tag2") is None
        assert FlowTokens(b"x" * 32).open(token, "tag1") is None
        flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
        assert tokens.open(flipped, "tag1") is None
    assert tokens.open("not-a-token", "tag1") is None
    assert tokens.open("", "tag1") is None
