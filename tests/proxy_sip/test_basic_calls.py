"""Plain calls through the proxy over UDP: an internal call end to end (auth, Record-Route, ACK and
BYE through the proxy), CANCEL while ringing, and the refusals answered before anything rings."""

from __future__ import annotations

import pytest

from tests.proxy_sip.conftest import Platform
from tests.proxy_sip.ua import Dialog

pytestmark = pytest.mark.timeout(30)  # every wait inside is bounded; this bounds the whole test


async def test_internal_call_by_extension_with_record_route_and_bye_through_proxy(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    bruno = await proxy.phone("1002")
    dlg = await alice.call("1002")
    ringing = await alice.response(dlg.call_id, final=False)
    assert ringing.status == 180
    ok = await alice.response(dlg.call_id)
    assert ok.status == 200
    rr = ok.headers.get_all("record-route")
    assert rr and f"127.0.0.1:{proxy.port}" in rr[0] and ";lr" in rr[0]
    invite = await bruno.request("INVITE")
    assert invite.uri.startswith("sip:1002@127.0.0.1:")  # the registered contact
    assert "1001" in (invite.headers.get("from") or "")  # internal: caller shown by extension
    alice.ack(dlg, ok)
    ack = await bruno.request("ACK")
    assert ack.headers.get("via", "").count(f"127.0.0.1:{proxy.port}") == 1  # went through the proxy
    alice.in_dialog(dlg, "BYE")
    bye = await bruno.request("BYE")
    assert f"127.0.0.1:{proxy.port}" in (bye.headers.get("via") or "")
    assert (await alice.response(dlg.call_id, "BYE")).status == 200
    assert [e.disposition for e in proxy.ended] == ["answered"]
    event = proxy.ended[0]
    assert (event.direction, event.account_id, event.callee_account_id, event.hangup_by) == (
        "internal", "demo/1001", "demo/1002", "caller")  # fmt: skip


async def test_cancel_while_ringing(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    bruno = await proxy.phone("1002", mode="ring")
    dlg = await alice.call("1002")
    assert (await alice.response(dlg.call_id, final=False)).status == 180
    alice.cancel(dlg)
    assert (await alice.response(dlg.call_id, "CANCEL")).status == 200
    final = await alice.response(dlg.call_id)
    assert final.status == 487
    alice.ack(dlg, final)
    cancel = await bruno.request("CANCEL")
    assert cancel.call_id == (await bruno.request("INVITE")).call_id
    assert [e.disposition for e in proxy.ended] == ["cancelled"]


async def test_callee_hangs_up_bye_reaches_caller(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    bruno = await proxy.phone("1002")
    dlg = await alice.call("1002")
    ok = await alice.response(dlg.call_id)
    alice.ack(dlg, ok)
    invite = await bruno.request("INVITE")
    await bruno.request("ACK")
    # Bruno hangs up: his BYE goes to the proxy (Record-Route) and on to Alice's flow.
    back = Dialog(invite.call_id, f"1002-{invite.call_id[:8]}", "1001", 1, "")
    back.from_header = (invite.headers.get("to") or "") + f";tag=1002-{invite.call_id[:8]}"
    back.to_header = invite.headers.get("from") or ""
    back.remote_target = alice.contact.strip("<>")
    back.route_set = invite.headers.get_all("record-route")
    bruno.in_dialog(back, "BYE")
    assert (await alice.request("BYE")).call_id == dlg.call_id
    assert (await bruno.response(invite.call_id, "BYE")).status == 200
    assert proxy.ended and proxy.ended[0].hangup_by == "callee"


async def test_phone_behind_nat_reached_over_its_flow(proxy: Platform) -> None:
    """The callee registered a private Contact it cannot be reached at (192.0.2.10 is TEST-NET): the
    INVITE, the ACK and the BYE still reach it over the flow it registered from."""
    alice = await proxy.phone("1001")
    bruno = await proxy.phone("1002", register=False)
    bruno.contact_host = "192.0.2.10:5060"
    await bruno.register()
    dlg = await alice.call("1002")
    ok = await alice.response(dlg.call_id)
    assert ok.status == 200
    invite = await bruno.request("INVITE")
    assert invite.uri == "sip:1002@192.0.2.10:5060"
    alice.ack(dlg, ok)
    assert dlg.remote_target == "sip:1002@192.0.2.10:5060"  # the dialog targets the private Contact…
    await bruno.request("ACK")  # …yet ACK and BYE arrive, relayed by the proxy over the flow
    alice.in_dialog(dlg, "BYE")
    await bruno.request("BYE")
    assert (await alice.response(dlg.call_id, "BYE")).status == 200


async def test_tcp_phone_called_over_its_connection(proxy: Platform) -> None:
    """A UDP caller calls a phone registered over TCP: the proxy double-record-routes (one entry per
    transport) and sends INVITE, ACK and BYE down the phone's own connection."""
    alice = await proxy.phone("1001")
    bruno = await proxy.phone("1002", tcp=True)
    dlg = await alice.call("1002")
    ok = await alice.response(dlg.call_id)
    assert ok.status == 200
    rr = ok.headers.get_all("record-route")
    assert len(rr) == 2 and sum("transport=tcp" in r for r in rr) == 1
    invite = await bruno.request("INVITE")
    assert invite.top_via.transport == "TCP"
    alice.ack(dlg, ok)
    await bruno.request("ACK")
    alice.in_dialog(dlg, "BYE")
    await bruno.request("BYE")
    assert (await alice.response(dlg.call_id, "BYE")).status == 200


async def test_answer_crossing_cancel_reaches_the_caller(proxy: Platform) -> None:
    """RFC 3261 §16.7: a 2xx that crosses the caller's CANCEL must still be relayed, so the caller
    can ACK and then BYE it; otherwise the callee keeps a call nobody ACKs."""
    alice = await proxy.phone("1001")
    await proxy.phone("1002", mode="answer_on_cancel")
    dlg = await alice.call("1002")
    assert (await alice.response(dlg.call_id, final=False)).status == 180
    alice.cancel(dlg)
    assert (await alice.response(dlg.call_id)).status == 200
