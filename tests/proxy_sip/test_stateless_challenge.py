"""An INVITE without credentials from a phone is challenged without a transaction (RFC 3261 §8.2.7):
the 407 leaves with a recognisable To tag, no server transaction is kept, a retransmission is
answered again, and the ACK of the 407 is absorbed on arrival. Trunk INVITEs, INVITEs with
credentials and in-dialog INVITEs keep the stateful path."""

from __future__ import annotations

import asyncio
import time

import pytest

from server import metrics
from server.sip_server import STATELESS_TAG
from sipcore.flow import Flow
from tests.proxy_sip.conftest import Platform
from tests.proxy_sip.ua import Dialog, trunk_invite

pytestmark = pytest.mark.timeout(30)


def _absorbed() -> int:
    return metrics.DROPPED.value("ack_of_stateless_answer")


async def test_challenge_keeps_no_transaction_and_its_ack_is_absorbed(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    layer = proxy.app.sip.transactions
    before = len(layer)
    dlg = alice.invite("1002")
    first = await alice.response(dlg.call_id)
    assert first.status == 407 and first.headers.get("proxy-authenticate")
    assert (first.to_tag or "").startswith(STATELESS_TAG)
    assert len(layer) == before  # nothing kept for the challenge
    assert not [m for m in alice.received if getattr(m, "status", 0) == 100]  # stateless: no 100 Trying
    alice.send(dlg.invite_text)  # a retransmission (same branch): answered again, same To tag
    await alice.expect(lambda m: getattr(m, "status", 0) == 407 and m is not first, what="second 407")
    again = [m for m in alice.received if getattr(m, "status", 0) == 407]
    assert len(again) == 2 and again[1].to_tag == first.to_tag
    absorbed = _absorbed()
    alice.ack(dlg, first)
    for _ in range(50):
        if _absorbed() > absorbed:
            break
        await asyncio.sleep(0.01)
    assert _absorbed() == absorbed + 1
    assert len(layer) == before


async def test_ack_with_a_foreign_tag_of_the_same_shape_is_not_absorbed(proxy: Platform) -> None:
    """Only the tag derived from the INVITE's own Call-ID, From and branch counts: a look-alike goes
    the normal way (here: an ACK for no call, dropped by the proxy, not counted as absorbed)."""
    alice = await proxy.phone("1001")
    sip = proxy.app.sip
    dlg = Dialog("look-alike", "ftag", "1002", 1, "z9hG4bKlookalike")
    dlg.from_header = f"<sip:1001@{alice.domain}>;tag=ftag"
    text = (
        f"ACK sip:1002@{alice.domain} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{alice.port};branch={dlg.branch}\r\n"
        f"Max-Forwards: 70\r\nFrom: {dlg.from_header}\r\nTo: <sip:1002@{alice.domain}>;tag={STATELESS_TAG}0123456789ab\r\n"
        "Call-ID: look-alike\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    flow = Flow("udp", ("127.0.0.1", alice.port), proxy.address)
    assert sip.take_stateless(text, flow) is False
    absorbed = _absorbed()
    sip.on_message(text, flow)
    assert _absorbed() == absorbed


async def test_which_invites_are_taken_without_state(proxy: Platform) -> None:
    """What any worker may answer without handing the INVITE to the Call-ID's owner."""
    alice = await proxy.phone("1001")
    sip = proxy.app.sip
    flow = Flow("udp", ("127.0.0.1", alice.port), proxy.address)
    base = (
        f"INVITE sip:1002@{alice.domain} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{alice.port};branch=z9hG4bK{{b}}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:1001@{alice.domain}>;tag=f1\r\nTo: <sip:1002@{alice.domain}>{{to}}\r\n"
        "Call-ID: {b}\r\nCSeq: 1 INVITE\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    plain = base.format(b="s1", to="", auth="").encode()
    assert sip.take_stateless(plain, flow) is True
    reply = await alice.response("s1")
    assert reply.status == 407
    with_auth = base.format(b="s2", to="", auth='Proxy-Authorization: Digest username="1001"\r\n').encode()
    assert sip.take_stateless(with_auth, flow) is False
    in_dialog = base.format(b="s3", to=";tag=abc", auth="").encode()
    assert sip.take_stateless(in_dialog, flow) is False
    from_trunk = Flow("udp", ("127.0.0.2", proxy.trunk.port), proxy.address)
    assert sip.take_stateless(base.format(b="s4", to="", auth="").encode(), from_trunk) is False
    assert sip.take_stateless(b"INVITE garbage\r\n\r\n", flow) is False  # the owner answers it
    # a scanner's INVITE (from an address outside the whitelist) is dropped here and bans its source
    guard = proxy.app.registrar.registrar.guard
    assert guard is not None
    scanner = Flow("udp", ("198.51.100.7", 5060), proxy.address)
    scanning = base.format(b="s5", to="", auth="User-Agent: friendly-scanner\r\n").encode()
    assert not guard.is_banned("198.51.100.7", time.time())
    assert sip.take_stateless(scanning, scanner) is True
    assert guard.is_banned("198.51.100.7", time.time())


async def test_trunk_invite_without_credentials_is_a_stateful_call(proxy: Platform) -> None:
    layer = proxy.app.sip.transactions
    alice = await proxy.phone("1001")
    before = len(layer)
    dlg = trunk_invite(proxy.trunk, "+33184000001", "+33699000001")
    trying = await proxy.trunk.response(dlg.call_id, final=False)
    assert trying.status in (100, 180)
    assert len(layer) > before
    assert (await alice.request("INVITE")).call_id == dlg.call_id
