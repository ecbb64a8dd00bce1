"""Calls that cross the carrier trunk: outbound with French normalisation and the account's caller
number, inbound DIDs (to an account, to a parallel group), and the caller number a forwarded outside
leg shows (``show_caller: account`` vs ``original``)."""

from __future__ import annotations

import pytest

from sipcore.message import Request
from tests.proxy_sip.conftest import Platform
from tests.proxy_sip.ua import trunk_invite

pytestmark = pytest.mark.timeout(30)  # every wait inside is bounded; this bounds the whole test


def _user_of(value: str | None) -> str:
    assert value is not None
    return value.split("sip:", 1)[1].split("@", 1)[0]


@pytest.mark.parametrize(
    ("dialed", "e164"),
    [("0612345678", "+33612345678"), ("0044207946000", "+44207946000"), ("+33184999999", "+33184999999")],
)
async def test_outbound_normalised_with_account_caller_id(proxy: Platform, dialed: str, e164: str) -> None:
    alice = await proxy.phone("1001")
    dlg = await alice.call(dialed)
    ok = await alice.response(dlg.call_id)
    assert ok.status == 200
    assert ok.headers.get_all("record-route")
    invite = await proxy.trunk.request("INVITE")
    assert invite.uri == f"sip:{e164}@127.0.0.2:{proxy.trunk.port}"
    assert _user_of(invite.headers.get("from")) == "+33184000001"  # Alice's outgoing number
    assert _user_of(invite.headers.get("p-asserted-identity")) == "+33184000001"
    alice.ack(dlg, ok)
    await proxy.trunk.request("ACK")
    alice.in_dialog(dlg, "BYE")
    await proxy.trunk.request("BYE")
    assert (await alice.response(dlg.call_id, "BYE")).status == 200
    event = proxy.ended[0]
    assert (event.direction, event.normalised, event.disposition, event.rated) == (
        "outbound",
        e164,
        "answered",
        True,
    )


async def test_inbound_did_to_account(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    dlg = trunk_invite(proxy.trunk, "+33184000001", "+33699000001")
    ok = await proxy.trunk.response(dlg.call_id)
    assert ok.status == 200
    invite = await alice.request("INVITE")
    assert _user_of(invite.headers.get("from")) == "+33699000001"
    proxy.trunk.ack(dlg, ok)
    await alice.request("ACK")
    proxy.trunk.in_dialog(dlg, "BYE")
    await alice.request("BYE")
    assert (await proxy.trunk.response(dlg.call_id, "BYE")).status == 200
    assert proxy.ended[0].direction == "inbound" and proxy.ended[0].did == "+33184000001"


async def test_inbound_did_to_parallel_group_rings_both(proxy: Platform) -> None:
    bruno = await proxy.phone("1002", mode="ring")
    chloe = await proxy.phone("1003", mode="ring")
    dlg = trunk_invite(proxy.trunk, "+33184000002", "+33699000001")
    inv_b, inv_c = await bruno.request("INVITE"), await chloe.request("INVITE")
    assert inv_b.call_id == inv_c.call_id  # one call, both phones ringing at once
    chloe.answer_now()
    ok = await proxy.trunk.response(dlg.call_id)
    assert ok.status == 200
    assert (await bruno.request("CANCEL")).call_id == inv_b.call_id
    assert (await bruno.request("ACK")).cseq == (inv_b.cseq[0], "ACK")  # its 487 was ACKed hop by hop
    proxy.trunk.ack(dlg, ok)
    await chloe.request("ACK")


@pytest.mark.parametrize(
    ("did", "forwarded_to", "shown"),
    [("+33184000012", "+33612345678", "+33184000012"), ("+33184000013", "+33612345679", "+33699000001")],
    ids=["show_caller_account", "show_caller_original"],
)
async def test_forwarded_outside_leg_caller_number(
    proxy: Platform, did: str, forwarded_to: str, shown: str
) -> None:
    dlg = trunk_invite(proxy.trunk, did, "+33699000001")
    forwarded = await proxy.trunk.expect(
        lambda m: isinstance(m, Request) and m.method == "INVITE" and forwarded_to in m.uri,
        what="forwarded INVITE",
    )
    assert _user_of(forwarded.headers.get("from")) == shown
    ok = await proxy.trunk.response(dlg.call_id)
    assert ok.status == 200


async def test_internal_caller_forwarded_outside_shows_a_public_number(proxy: Platform) -> None:
    """Alice (1001, outgoing +33184000001) calls 1013, permanently forwarded to a mobile with
    ``show_caller: original``: the carrier should see Alice's public number, not extension 1001."""
    alice = await proxy.phone("1001")
    await alice.call("1013")
    forwarded = await proxy.trunk.request("INVITE")
    assert _user_of(forwarded.headers.get("from")) == "+33184000001"
