"""Refusals and cut-offs over the wire: the premium block (403 + Warning), the simultaneous-call
limit, and the proxy ending an answered call with a BYE to both parties at the maximum duration.

Two cut-offs: ``proxy.max_call_duration`` made short (2 s), and a HARD-balance customer whose balance
pays 2 s (the rater's ``authorise`` grants the maximum duration at call setup)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.proxy_sip.configs import PREPAID_DOMAIN
from tests.proxy_sip.conftest import Platform, platform

pytestmark = pytest.mark.timeout(30)  # every wait inside is bounded; this bounds the whole test


async def test_blocked_premium_number_refused_with_warning(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    dlg = await alice.call("0899123456")
    final = await alice.response(dlg.call_id)
    assert final.status == 403
    assert (final.headers.get("warning") or "").startswith("399 ")
    alice.ack(dlg, final)
    assert proxy.trunk.requests("INVITE") == []
    assert [(e.disposition, e.sip_status) for e in proxy.ended] == [("refused", 403)]


async def test_simultaneous_call_limit(proxy: Platform) -> None:
    caller = await proxy.phone("1014")  # max_calls: 1
    bruno = await proxy.phone("1002", mode="ring")
    chloe = await proxy.phone("1003")
    first = await caller.call("1002")
    assert (await caller.response(first.call_id, final=False)).status == 180
    second = await caller.call("1003")
    refused = await caller.response(second.call_id)
    assert refused.status == 403 and "limit" in (refused.headers.get("warning") or "").lower()
    assert chloe.requests("INVITE") == []
    caller.cancel(first)
    assert (await caller.response(first.call_id)).status == 487
    await bruno.request("CANCEL")
    third = await caller.call("1003")  # the slot is free again
    assert (await caller.response(third.call_id)).status == 200


async def test_cut_off_sends_bye_to_both_parties(tmp_path: Path) -> None:
    async with platform(tmp_path, max_call_duration=2) as proxy:
        alice = await proxy.phone("1001")
        bruno = await proxy.phone("1002")
        dlg = await alice.call("1002")
        ok = await alice.response(dlg.call_id)
        alice.ack(dlg, ok)
        await bruno.request("ACK")
        bye_callee = await bruno.request("BYE", timeout=5)
        bye_caller = await alice.request("BYE", timeout=5)
        assert bye_callee.call_id == bye_caller.call_id == dlg.call_id
        assert bye_callee.uri == bruno.contact.strip("<>") and bye_caller.uri == alice.contact.strip("<>")
        # Each party can match the BYE to its dialog: the tags are the dialog's, seen from its side.
        assert bye_caller.to_tag == dlg.from_tag and bye_caller.from_tag == ok.to_tag
        assert bye_callee.from_tag == dlg.from_tag and bye_callee.to_tag == ok.to_tag
        assert [(e.disposition, e.hangup_by) for e in proxy.ended] == [("answered", "system")]
        assert 2 <= proxy.ended[0].duration <= 3


async def test_prepaid_cut_off_at_the_granted_duration(proxy: Platform) -> None:
    caller = await proxy.phone("3001", domain=PREPAID_DOMAIN)
    dlg = await caller.call("0700123456")  # +33700…: 0.6 EUR/min, per-second pulse, 0.02 EUR balance
    ok = await caller.response(dlg.call_id)
    assert ok.status == 200
    caller.ack(dlg, ok)
    invite = await proxy.trunk.request("INVITE")
    assert invite.uri.startswith("sip:+33700123456@")
    await proxy.trunk.request("ACK")
    assert (await proxy.trunk.request("BYE", timeout=5)).call_id == dlg.call_id
    assert (await caller.request("BYE", timeout=5)).call_id == dlg.call_id
    event = proxy.ended[0]
    assert (event.disposition, event.hangup_by, event.rated) == ("answered", "system", True)
    assert 2 <= event.duration <= 3


async def test_answered_call_never_acked_is_ended(proxy: Platform) -> None:
    """§13.3.1.4: a 2xx nobody ACKs means a dead dialog. The proxy ends the call after 64*T1 (made
    short here) with a BYE both ways, so the callee is not held busy until the maximum duration."""
    service = proxy.app.proxy
    service.update(dataclasses.replace(service.controller.settings, ack_wait=1.0))
    alice = await proxy.phone("1001")
    bruno = await proxy.phone("1002")
    dlg = await alice.call("1002")
    ok = await alice.response(dlg.call_id)
    assert ok.status == 200  # ... and alice never ACKs it
    bye_callee = await bruno.request("BYE", timeout=5)
    assert bye_callee.call_id == dlg.call_id
    assert [(e.disposition, e.hangup_by) for e in proxy.ended] == [("answered", "system")]
    assert not proxy.app.proxy.accounts.busy_accounts()  # nobody is left counted as in a call
