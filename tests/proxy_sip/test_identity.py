"""What the carrier and the called phone receive of the caller (issue: proxy identity and billing),
read from their own copy of each request: the phone's digest credentials never leave the proxy,
identity headers a phone forges never pass, the proxy asserts one identity (RFC 3325), ``Privacy:
id`` is honoured, a trusted carrier's assertions stand, and a forwarded outside leg is booked to the
account that forwarded it (CDR, ``report account``, balance)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rating.ledger_sqlite import SqliteLedger
from server.cli import main as cli_main
from sipcore.message import Request
from tests.proxy_sip.conftest import Platform, platform
from tests.proxy_sip.ua import Ua, trunk_invite

pytestmark = pytest.mark.timeout(30)

FORGED = (
    "P-Asserted-Identity: <sip:+33140000000@demo.sipcore.test>\n"
    'Remote-Party-ID: "President" <sip:+33140000000@demo.sipcore.test>;party=calling;screen=yes\n'
    "P-Preferred-Identity: <sip:+33140000000@demo.sipcore.test>\n"
)
CREDENTIAL_KEYS = ("proxy-authorization", "authorization")
IDENTITY_KEYS = ("p-asserted-identity", "remote-party-id", "p-preferred-identity")


def _user(value: str | None) -> str:
    assert value is not None
    return value.split("sip:", 1)[1].split("@", 1)[0]


def _no_credentials(req: Request) -> None:
    for key in CREDENTIAL_KEYS:
        assert req.headers.get_all(key) == [], f"{key} leaked: {req.headers.get_all(key)}"


def _asserted(req: Request) -> list[str]:
    return [_user(v) for v in req.headers.get_all("p-asserted-identity")]


async def _answered_call(caller: Ua, callee: Ua, dialed: str, extra: str = "") -> Request:
    """Caller dials, callee answers; returns the callee's copy of the INVITE. ACK and BYE carry the
    caller's credentials too (as several phones send them), and must arrive without."""
    dlg = await caller.call(dialed, extra=extra)
    ok = await caller.response(dlg.call_id)
    assert ok.status == 200
    invite = await callee.request("INVITE")
    caller.ack(dlg, ok)
    dlg_creds = dlg.credentials
    ack = await callee.request("ACK")
    caller.in_dialog(dlg, "BYE", extra=dlg_creds)
    bye = await callee.request("BYE")
    assert (await caller.response(dlg.call_id, "BYE")).status == 200
    for req in (invite, ack, bye):
        _no_credentials(req)
    return invite


async def test_outbound_forged_identity_and_credentials_do_not_reach_the_carrier(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    foreign = 'Authorization: Digest username="alice", realm="carrier.example", nonce="n", uri="sip:x", response="0"\n'
    dlg = await alice.call("0612345678", extra=FORGED + foreign)
    assert (await alice.response(dlg.call_id)).status == 200
    invite = await proxy.trunk.request("INVITE")
    assert invite.headers.get_all("proxy-authorization") == []
    assert [v for v in invite.headers.get_all("authorization")] == [foreign.split(": ", 1)[1].strip()]
    assert _asserted(invite) == ["+33184000001"]  # one identity: the account's outgoing number
    assert invite.headers.get_all("remote-party-id") == []
    assert invite.headers.get_all("p-preferred-identity") == []
    assert _user(invite.headers.get("from")) == "+33184000001"


async def test_internal_call_asserts_the_extension_only(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    bruno = await proxy.phone("1002")
    invite = await _answered_call(alice, bruno, "1002", FORGED)
    assert _asserted(invite) == ["1001"]
    for key in ("remote-party-id", "p-preferred-identity"):
        assert invite.headers.get_all(key) == []
    assert _user(invite.headers.get("from")) == "1001"


async def test_every_fork_and_forwarded_leg_is_clean(proxy: Platform) -> None:
    """1002 calls 1004 (busy forward to 1005): the busy leg and the forwarded one; and 1003 calls a
    phone registered twice (two branches)."""
    bruno = await proxy.phone("1002")
    busy = await proxy.phone("1004", mode="busy")
    target = await proxy.phone("1005")
    dlg = await bruno.call("1004", extra=FORGED)
    assert (await bruno.response(dlg.call_id)).status == 200
    for req in (await busy.request("INVITE"), await target.request("INVITE")):
        _no_credentials(req)
        assert _asserted(req) == ["1002"]
    chloe = await proxy.phone("1003")
    desk, soft = await proxy.phone("1006", mode="ring"), await proxy.phone("1006", mode="ring")
    await chloe.call("1006", extra=FORGED)
    for req in (await desk.request("INVITE"), await soft.request("INVITE")):
        _no_credentials(req)
        assert _asserted(req) == ["1003"]


async def test_preferred_identity_chooses_among_own_numbers_only(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    own = "P-Preferred-Identity: <sip:+33184000091@demo.sipcore.test>\n"  # a DID that rings 1001
    dlg = await alice.call("0612345678", extra=own)
    assert (await alice.response(dlg.call_id)).status == 200
    invite = await proxy.trunk.request("INVITE")
    assert _asserted(invite) == ["+33184000091"]
    assert _user(invite.headers.get("from")) == "+33184000091"
    assert invite.headers.get_all("p-preferred-identity") == []
    other = "P-Preferred-Identity: <sip:+33184000002@demo.sipcore.test>\n"  # the sales group's DID
    dlg = await alice.call("0612345670", extra=other)
    assert (await alice.response(dlg.call_id)).status == 200
    invite = await proxy.trunk.expect(
        lambda m: isinstance(m, Request) and m.method == "INVITE" and "0612345670"[1:] in m.uri
    )
    assert _asserted(invite) == ["+33184000001"]


async def test_privacy_id_anonymous_to_carrier_with_asserted_identity(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    dlg = await alice.call("0612345678", extra="Privacy: id\n" + FORGED)
    assert (await alice.response(dlg.call_id)).status == 200
    invite = await proxy.trunk.request("INVITE")
    assert "anonymous@anonymous.invalid" in (invite.headers.get("from") or "")
    assert f";tag={dlg.from_tag}" in (invite.headers.get("from") or "")  # the dialog keeps its tag
    assert _asserted(invite) == ["+33184000001"]  # the trusted carrier still learns who calls
    assert invite.headers.get("privacy") == "id"


async def test_privacy_id_hides_the_caller_from_a_phone(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    bruno = await proxy.phone("1002")
    invite = await _answered_call(alice, bruno, "1002", "Privacy: id\n")
    assert "anonymous@anonymous.invalid" in (invite.headers.get("from") or "")
    assert "1001" not in (invite.headers.get("from") or "")
    assert invite.headers.get_all("p-asserted-identity") == []


async def test_trusted_carrier_identity_reaches_the_phone(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    trunk_invite(
        proxy.trunk,
        "+33184000001",
        "+33699000001",
        "P-Asserted-Identity: <sip:+33699000001@carrier.example>\n",
    )
    invite = await alice.request("INVITE")
    assert _asserted(invite) == ["+33699000001"]


async def test_carrier_privacy_id_withholds_its_identity_from_the_phone(proxy: Platform) -> None:
    alice = await proxy.phone("1001")
    extra = "P-Asserted-Identity: <sip:+33699000001@carrier.example>\nPrivacy: id\n"
    trunk_invite(proxy.trunk, "+33184000001", "anonymous", extra)
    invite = await alice.request("INVITE")
    assert invite.headers.get_all("p-asserted-identity") == []


async def test_untrusted_carrier_identity_is_dropped(tmp_path: Path) -> None:
    async with platform(tmp_path, trunk_trusted="false") as proxy:
        alice = await proxy.phone("1001")
        extra = (
            "P-Asserted-Identity: <sip:+33140000000@carrier.example>\nRemote-Party-ID: <sip:+33140000000@x>\n"
        )
        trunk_invite(proxy.trunk, "+33184000001", "+33699000001", extra)
        invite = await alice.request("INVITE")
        assert invite.headers.get_all("p-asserted-identity") == []
        assert invite.headers.get_all("remote-party-id") == []
        assert _user(invite.headers.get("from")) == "+33699000001"


def _report(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(args) == 0
    return out.getvalue()


async def test_forwarded_leg_is_booked_to_the_forwarder(tmp_path: Path) -> None:
    """1001 (Demo) dials 3002's DID; 3002 (Prepaid SAS) forwards permanently to a mobile: the outside
    leg's CDR carries 3002 as the account, Prepaid SAS as the customer, Alice as the caller, and the
    price comes off Prepaid SAS's balance."""
    async with platform(tmp_path) as proxy:
        alice = await proxy.phone("1001")
        dlg = await alice.call("0184000302")
        ok = await alice.response(dlg.call_id)
        assert ok.status == 200
        invite = await proxy.trunk.request("INVITE")
        _no_credentials(invite)
        assert _asserted(invite) == ["+33184000302"]  # show_caller: account (3002's DID, its outgoing)
        alice.ack(dlg, ok)
        await proxy.trunk.request("ACK")
        await asyncio.sleep(1.2)
        alice.in_dialog(dlg, "BYE")
        await proxy.trunk.request("BYE")
        assert (await alice.response(dlg.call_id, "BYE")).status == 200
        for _ in range(100):
            if proxy.ended:
                break
            await asyncio.sleep(0.02)
        config = str(proxy.app.loaded.path)
        ledger_path = proxy.app.billing.ledger_path
    # the app is closed: the CDR pipeline has flushed
    db = sqlite3.connect(tmp_path / "state" / "cdr.sqlite3")
    rows = db.execute("SELECT account_id, customer_id, caller, direction, price_micros FROM cdr").fetchall()
    assert len(rows) == 1
    account, customer, caller, direction, price = rows[0]
    assert (account, customer, caller, direction) == ("pre/3002", "pre", "+33184000001", "forwarded")
    assert price > 0
    day = datetime.now(UTC).date()
    period = ["--from", str(day - timedelta(days=1)), "--to", str(day + timedelta(days=1))]
    common = [*period, "--config", config, "--format", "csv"]
    mine = await asyncio.to_thread(_report, ["report", "account", "--account", "pre/3002", *common])
    callers = await asyncio.to_thread(_report, ["report", "account", "--account", "demo/1001", *common])
    assert "TOTAL 1 calls" in mine and ",forwarded,+33184000001,0184000302,+33612345678," in mine
    assert "+33612345678" not in callers
    with SqliteLedger(ledger_path) as ledger:
        debits = [e for e in ledger.entries("pre") if e.memo == dlg.call_id]
        assert [e.amount_micros for e in debits] == [-price]
        assert [e for e in ledger.entries("demo") if e.memo == dlg.call_id] == []


async def test_privacy_id_towards_an_untrusted_carrier_withholds_the_identity(tmp_path: Path) -> None:
    async with platform(tmp_path, trunk_trusted="false") as proxy:
        alice = await proxy.phone("1001")
        dlg = await alice.call("0612345678", extra="Privacy: id\n")
        assert (await alice.response(dlg.call_id)).status == 200
        invite = await proxy.trunk.request("INVITE")
        assert "anonymous@anonymous.invalid" in (invite.headers.get("from") or "")
        assert invite.headers.get_all("p-asserted-identity") == []
        bruno_call = await alice.call("0612345670")  # without Privacy the carrier learns the number
        assert (await alice.response(bruno_call.call_id)).status == 200
        plain = await proxy.trunk.expect(
            lambda m: isinstance(m, Request) and m.method == "INVITE" and m.call_id == bruno_call.call_id
        )
        assert _asserted(plain) == ["+33184000001"]
