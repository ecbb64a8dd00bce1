"""The admin API of `sipcore serve` with two workers (a subprocess): worker 0 answers the admin port
and gathers from worker 1 over the worker channel — registrations written by either worker, calls owned
by either, a hang-up of a call worker 1 owns, and a prepaid customer paid through the API whose next
calls go through on both workers without a restart (memory counters: each worker applies the payment
once; Redis counters: folded once, re-read by both). The CLI against the same server, and without one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import zlib
from pathlib import Path

import pytest

from sipcore.digest import build_authorization
from tests.conftest import free_port
from tests.proxy_sip.configs import DOMAIN, PREPAID_DOMAIN, TRUNK_HOST, password
from tests.proxy_sip.ua import Dialog, Ua
from tests.server.admin_helpers import admin_config, api, cli
from tests.server.workers_helpers import owned_by, serve

pytestmark = pytest.mark.timeout(120)

WORKERS = 2


async def call_with_id(caller: Ua, dialed: str, call_id: str) -> Dialog:
    """Ua.call on a Call-ID chosen by the test (so the test picks the worker that owns the call)."""
    dlg = caller.invite(dialed, call_id=call_id)
    first = await caller.response(call_id, timeout=5)
    assert first.status == 407, first.start_line()
    caller.ack(dlg, first)
    value = build_authorization(first.headers.get("proxy-authenticate") or "", username=caller.user,
                                password=caller.password, method="INVITE", uri=f"sip:{dialed}@{caller.domain}",
                                cnonce=secrets.token_hex(4))  # fmt: skip
    dlg.credentials = f"Proxy-Authorization: {value}\n"
    return caller.invite(dialed, 2, dlg.credentials, call_id, dlg.from_tag)


async def phone(port: int, user: str, domain: str = DOMAIN) -> Ua:
    ua = await Ua.open(user, password(user), ("127.0.0.1", port))
    ua.domain = domain
    await ua.register(timeout=5)
    return ua


def cdrs(directory: Path) -> list[tuple[str, str]]:
    path = directory / "state" / "cdr.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT call_id, disposition FROM cdr").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


async def wait_for(predicate, timeout: float = 8.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_registrations_calls_and_hangup_across_two_workers(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    trunk = await Ua.open("carrier", "", ("127.0.0.1", port), host=TRUNK_HOST)
    path = admin_config(tmp_path, port, trunk.port, admin_port, workers=WORKERS)
    async with serve(path, WORKERS, port=port):
        users = ["1001", "1002", "1003", "1005"]
        assert {zlib.crc32(u.encode()) % WORKERS for u in users} == {0, 1}  # REGISTERs written by both
        uas = {u: await phone(port, u) for u in users}
        try:
            status, regs = await api(admin_port, "GET", "/registrations?customer=demo")
            assert status == 200 and sorted(r["account"] for r in regs["registrations"]) == [
                f"demo/{u}" for u in users
            ]
            # one answered call owned by each worker
            ids = {w: owned_by(w, WORKERS) for w in range(WORKERS)}
            pairs = {0: ("1001", "1002"), 1: ("1003", "1005")}
            for w, (a, b) in pairs.items():
                dlg = await call_with_id(uas[a], b, ids[w])
                ok = await uas[a].response(ids[w], timeout=5)
                assert ok.status == 200
                uas[a].ack(dlg, ok)
                await uas[b].request("ACK", timeout=5)
            status, listed = await api(admin_port, "GET", "/calls")
            assert status == 200 and listed["workers_missing"] == []
            assert sorted((c["call_id"], c["worker"], c["state"]) for c in listed["calls"]) == sorted(
                (ids[w], w, "answered") for w in range(WORKERS)
            )
            status, state = await api(admin_port, "GET", "/status")
            assert (state["workers"], state["active_calls"], state["registrations"]) == (2, 2, 4)
            # hang up the call worker 1 owns, through worker 0's admin port
            status, done = await api(admin_port, "DELETE", f"/calls/{ids[1]}")
            assert status == 200 and done["hung_up"] is True
            assert (await uas["1005"].request("BYE", timeout=5)).call_id == ids[1]
            assert (await uas["1003"].request("BYE", timeout=5)).call_id == ids[1]
            await wait_for(lambda: (ids[1], "answered") in cdrs(tmp_path))
            assert [c for c in cdrs(tmp_path) if c[0] == ids[1]] == [(ids[1], "answered")]
            assert [c["call_id"] for c in (await api(admin_port, "GET", "/calls"))[1]["calls"]] == [ids[0]]
            assert (await api(admin_port, "DELETE", f"/calls/{ids[1]}"))[0] == 404
            # the CLI, against the same server
            rc, out, err = await cli("calls", "--config", str(path))
            assert rc == 0, err
            assert ids[0] in out and ids[1] not in out and "1 call(s)" in out
            rc, out, err = await cli(
                "registrations", "--config", str(path), "--account", "demo/1003", "--json"
            )
            assert rc == 0 and [r["account"] for r in json.loads(out)["registrations"]] == ["demo/1003"]
            rc, out, err = await cli("hangup", ids[0], "--config", str(path))
            assert rc == 0 and f"call {ids[0]} hung up" in out
            assert (await uas["1002"].request("BYE", timeout=5)).call_id == ids[0]
            rc, out, err = await cli("status", "--config", str(path))
            assert rc == 0 and "workers" in out and "active_calls   0" in out
        finally:
            for ua in uas.values():
                ua.close()
            trunk.close()
    # no server: one line, exit 3, nothing written
    rc, out, err = await cli("balance", "pay", "--customer", "pre", "--amount", "5", "--config", str(path))
    assert rc == 3 and out == "" and "no sipcore server answers" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("counters", ["memory", "redis"])
async def test_prepaid_paid_through_the_api_calls_on_both_workers_without_restart(
    tmp_path: Path, counters: str
) -> None:
    port, admin_port = free_port(), free_port()
    trunk = await Ua.open("carrier", "", ("127.0.0.1", port), host=TRUNK_HOST)
    path = admin_config(tmp_path, port, trunk.port, admin_port, workers=WORKERS, counters=counters)
    try:
        async with serve(path, WORKERS, port=port):
            caller = await phone(port, "3001", PREPAID_DOMAIN)
            try:
                charged = await api(
                    admin_port, "POST", "/balances/pre/charges", {"amount": "0.02", "operation_id": "c1"}
                )
                assert charged[0] == 201 and charged[1]["balance"] == "0.00"
                for w in range(WORKERS):  # refused whichever worker owns the call
                    call_id = owned_by(w, WORKERS)
                    dlg = await call_with_id(caller, "0700123456", call_id)
                    refused = await caller.response(call_id, timeout=5)
                    assert refused.status == 402, (w, refused.start_line())
                    caller.ack(dlg, refused)
                # paid through the CLI (the server records and applies it)
                rc, out, err = await cli("balance", "pay", "--customer", "pre", "--amount", "1.00", "--config", str(path),
                                         "--operation-id", "pay-1", "--note", "card")  # fmt: skip
                assert rc == 0, err
                assert "payment 1.00 for pre" in out and "balance now 1.00" in out
                again = await api(
                    admin_port, "POST", "/balances/pre/payments", {"amount": "1.00", "operation_id": "pay-1"}
                )
                assert again[0] == 200 and again[1]["duplicate"] is True
                for w in range(WORKERS):  # now allowed on both workers, no restart
                    call_id = owned_by(w, WORKERS)
                    dlg = await call_with_id(caller, "0700123456", call_id)
                    ok = await caller.response(call_id, timeout=5)
                    assert ok.status == 200, (w, ok.start_line())
                    caller.ack(dlg, ok)
                    await trunk.request("ACK", timeout=5)
                    caller.in_dialog(dlg, "BYE")
                    await caller.response(call_id, "BYE", timeout=5)
                status, balance = await api(admin_port, "GET", "/balances/pre")
                assert status == 200 and balance["counters"] == counters
                if counters == "memory":
                    assert [w["worker"] for w in balance["workers"]] == [0, 1]
            finally:
                caller.close()
        ledger = sqlite3.connect(tmp_path / "state" / "ledger.sqlite3")
        try:
            rows = ledger.execute(
                "SELECT kind, amount_micros, operation_id FROM ledger WHERE operation_id IS NOT NULL ORDER BY id"
            ).fetchall()
        finally:
            ledger.close()
        assert rows == [("charge", -20_000, "c1"), ("payment", 1_000_000, "pay-1")]  # once each
    finally:
        trunk.close()
