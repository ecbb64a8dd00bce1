"""Forwarding rules executed over the wire: busy, no answer after the delay, unreachable, follow-me
staggered, permanent (the phone never rings), and a forwarding loop stopped."""

from __future__ import annotations

import pytest

from tests.proxy_sip.conftest import Platform

pytestmark = pytest.mark.timeout(30)  # every wait inside is bounded; this bounds the whole test


async def test_busy_forward_rings_the_busy_target(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    busy = await proxy.phone("1004", mode="busy")
    target = await proxy.phone("1005")
    dlg = await alice.call("1004")
    ok = await alice.response(dlg.call_id)
    assert ok.status == 200
    assert (await busy.request("INVITE")).call_id == dlg.call_id
    assert (await busy.request("ACK")).call_id == dlg.call_id  # the proxy ACKs the 486 hop by hop
    forwarded = await target.request("INVITE")
    assert "reason=user-busy" in (forwarded.headers.get("diversion") or "")
    alice.ack(dlg, ok)
    await target.request("ACK")
    alice.in_dialog(dlg, "BYE")
    await target.request("BYE")  # the dialog is with the busy target, through the proxy
    assert (await alice.response(dlg.call_id, "BYE")).status == 200
    assert [(e.disposition, e.callee_account_id) for e in proxy.ended] == [("answered", "demo/1005")]


async def test_no_answer_forward_after_the_delay(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    own = await proxy.phone("1006", mode="ring")
    target = await proxy.phone("1005")
    dlg = await alice.call("1006")
    first = await own.request("INVITE")
    ok = await alice.response(dlg.call_id, timeout=5)
    assert ok.status == 200
    forwarded = await target.request("INVITE")
    assert target.when(forwarded) - own.when(first) >= 0.9  # delay: 1 s of ringing first
    assert "reason=no-answer" in (forwarded.headers.get("diversion") or "")
    assert (await own.request("CANCEL")).call_id == first.call_id  # the own phone stops ringing


async def test_unreachable_forward_when_not_registered(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    target = await proxy.phone("1005")  # 1007 never registers
    dlg = await alice.call("1007")
    assert (await alice.response(dlg.call_id)).status == 200
    forwarded = await target.request("INVITE")
    assert "reason=unavailable" in (forwarded.headers.get("diversion") or "")


async def test_follow_me_staggered_own_phone_silent(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    own = await proxy.phone("1008")
    first = await proxy.phone("1002", mode="ring")
    second = await proxy.phone("1003")
    dlg = await alice.call("1008")
    ok = await alice.response(dlg.call_id, timeout=5)
    assert ok.status == 200
    inv1, inv2 = await first.request("INVITE"), await second.request("INVITE")
    assert second.when(inv2) - first.when(inv1) >= 0.9  # the second destination starts after 1 s
    assert (await first.request("CANCEL")).call_id == dlg.call_id  # the first stopped when 1003 answered
    assert own.requests("INVITE") == []


async def test_permanent_forward_phone_never_rings(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    own = await proxy.phone("1009")
    target = await proxy.phone("1005")
    dlg = await alice.call("1009")
    assert (await alice.response(dlg.call_id)).status == 200
    forwarded = await target.request("INVITE")
    assert "reason=unconditional" in (forwarded.headers.get("diversion") or "")
    assert own.requests("INVITE") == []


async def test_forwarding_loop_is_stopped(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    a = await proxy.phone("1010")
    b = await proxy.phone("1011")
    dlg = await alice.call("1010")
    final = await alice.response(dlg.call_id)
    assert final.status == 482, final.start_line()  # 1010 -> 1011 -> 1010 again: that target is refused
    alice.ack(dlg, final)
    assert a.requests("INVITE") == [] and b.requests("INVITE") == []
    assert [e.disposition for e in proxy.ended] == ["failed"]
