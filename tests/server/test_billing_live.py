"""Fees on a running server (issue 18), over real sockets against `sipcore serve` (one and two workers,
memory and Redis counters): a prepaid (HARD) customer whose monthly and setup fees exhaust its balance
is refused priced calls at once on every worker with the answer of an exhausted balance, while on-net
calls still pass; `sipcore billing run` posts through the server once, however often it is repeated;
a payment through the admin API lets calls through again."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.proxy_sip.configs import DOMAIN, PREPAID_DOMAIN, TRUNK_HOST
from tests.proxy_sip.ua import Ua
from tests.server.admin_helpers import admin_config, api, cli, drop_prefix
from tests.server.test_admin_workers import call_with_id, phone
from tests.server.workers_helpers import owned_by, serve

pytestmark = pytest.mark.timeout(120)

FEES = (  # the prepaid customer's accounts and DID billed from 15 January 2027: 4 x 0.01 of January
    ("pulse: 1}", "pulse: 1, monthly_fee: 0.01}"),
    ('{extension: "3001", username: "3001", password: pw3001}',
     '{extension: "3001", username: "3001", password: pw3001, billing_start: 2027-01-15}'),
    ('{extension: "3002", username: "3002", password: pw3002,',
     '{extension: "3002", username: "3002", password: pw3002, billing_start: 2027-01-15,'),
    ('{number: "+33184000302", to: "3002"}',
     '{number: "+33184000302", to: "3002", setup_fee: 0.01, monthly_fee: 0.01, billing_start: 2027-01-15}'),
)  # fmt: skip


def fee_rows(directory: Path) -> list[tuple[str, int, str]]:
    db = sqlite3.connect(directory / "state" / "ledger.sqlite3")
    try:
        return db.execute(
            "SELECT customer_id, amount_micros, operation_id FROM ledger WHERE kind = 'fee' ORDER BY id"
        ).fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(("workers", "counters"), [(1, "memory"), (2, "memory"), (2, "redis")])
async def test_fees_exhaust_a_prepaid_balance_live_and_a_payment_restores_it(
    tmp_path: Path, workers: int, counters: str
) -> None:
    port, admin_port = free_port(), free_port()
    prefix = f"sipcore-test-fees-{secrets.token_hex(4)}:"
    trunk = await Ua.open("carrier", "", ("127.0.0.1", port), host=TRUNK_HOST)
    path = admin_config(
        tmp_path, port, trunk.port, admin_port, workers=workers, counters=counters, prefix=prefix
    )
    text = path.read_text(encoding="utf-8")
    for old, new in FEES:
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    try:
        async with serve(path, workers, port=port):
            caller = await phone(port, "3001", PREPAID_DOMAIN)
            alice = await phone(port, "1001", DOMAIN)  # demo's +33184000001 rings here: on-net
            try:
                status, balance = await api(admin_port, "GET", "/balances/pre")
                assert status == 200 and balance["balance"] == "0.02"  # December: nothing billed yet
                assert fee_rows(tmp_path) == []
                rc, out, err = await cli(
                    "billing", "run", "--month", "2027-01", "--config", str(path), "--dry-run"
                )
                assert rc == 0 and "would post 4 of 4 fees (through the running server)" in out, err
                assert fee_rows(tmp_path) == []
                # by hand, through the server: posted once, however often, applied by every worker
                for attempt in range(3):
                    rc, out, err = await cli("billing", "run", "--month", "2027-01", "--config", str(path))
                    assert rc == 0, err
                    assert f"posted {4 if attempt == 0 else 0} of 4 fees (through the running server)" in out
                assert sorted(op for _, _, op in fee_rows(tmp_path)) == [
                    "fee:pre:monthly:account:pre/3001:2027-01",
                    "fee:pre:monthly:account:pre/3002:2027-01",
                    "fee:pre:monthly:did:+33184000302:2027-01",
                    "fee:pre:setup:did:+33184000302:2027-01",
                ]
                status, balance = await api(admin_port, "GET", "/balances/pre")
                assert (balance["balance"], balance["ledger_balance"]) == ("-0.02", "-0.02")
                if counters == "memory" and workers > 1:
                    assert [w["balance"] for w in balance["workers"]] == ["-0.02"] * workers
                for w in range(workers):  # the answer of an exhausted balance, whichever worker
                    call_id = owned_by(w, workers)
                    dlg = await call_with_id(caller, "0700123456", call_id)
                    refused = await caller.response(call_id, timeout=5)
                    assert (refused.status, refused.reason) == (402, "Payment Required"), (
                        w,
                        refused.start_line(),
                    )
                    caller.ack(dlg, refused)
                    # on-net (a DID of ours) still passes
                    call_id = owned_by(w, workers)
                    dlg = await call_with_id(caller, "0184000001", call_id)
                    ok = await caller.response(call_id, timeout=5)
                    assert ok.status == 200, (w, ok.start_line())
                    caller.ack(dlg, ok)
                    caller.in_dialog(dlg, "BYE")
                    assert (await caller.response(call_id, "BYE", timeout=5)).status == 200
                # a payment through the admin API: calls pass again at once, on every worker
                status, paid = await api(
                    admin_port, "POST", "/balances/pre/payments", {"amount": "1.00", "operation_id": "pay-1"}
                )
                assert status == 201 and paid["balance"] == "0.98"
                for w in range(workers):
                    call_id = owned_by(w, workers)
                    dlg = await call_with_id(caller, "0700123456", call_id)
                    ok = await caller.response(call_id, timeout=5)
                    assert ok.status == 200, (w, ok.start_line())
                    caller.ack(dlg, ok)
                    await trunk.request("ACK", timeout=5)
                    caller.in_dialog(dlg, "BYE")
                    await caller.response(call_id, "BYE", timeout=5)
            finally:
                caller.close()
                alice.close()
        assert len(fee_rows(tmp_path)) == 4  # nothing posted twice, the restart of workers included
    finally:
        trunk.close()
        if counters == "redis":
            await drop_prefix(prefix)


async def test_billing_run_api_refuses_malformed_requests_and_a_dry_run_writes_nothing(
    tmp_path: Path,
) -> None:
    from tests.server.admin_helpers import admin_platform

    async with admin_platform(tmp_path) as p:
        assert p.app.admin_address is not None
        port = p.app.admin_address[1]
        for body, status in (
            (None, 400),
            ({"month": "2027-13"}, 400),
            ({"month": 202701}, 400),
            ({"month": "2027-01", "customer": "nobody"}, 404),
        ):
            answer = await api(port, "POST", "/billing/run", body)
            assert answer[0] == status, (body, answer)
        assert (await api(port, "GET", "/billing/run"))[0] == 405
        # the test configuration has no fees: an empty run, nothing written
        status, answer = await api(port, "POST", "/billing/run", {"month": "2027-01", "dry_run": True})
        assert status == 200 and answer == {"month": "2027-01", "dry_run": True, "fees": []}
        assert fee_rows(tmp_path) == []
