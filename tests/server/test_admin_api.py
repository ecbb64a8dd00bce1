"""The admin API over real sockets, against an in-process server (one process): registrations, calls,
hang-up (BYE to both, CDR ended by system), a prepaid customer paid through the API calling again
without a restart, idempotent payments, the bearer token, status and reload."""

from __future__ import annotations

import json
import secrets
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from config.loader import ConfigError, load_config_text
from tests.proxy_sip.configs import PREPAID_DOMAIN
from tests.proxy_sip.conftest import Platform
from tests.server.admin_helpers import admin_platform, api, cli, drop_prefix

pytestmark = pytest.mark.timeout(40)


ONE_CUSTOMER = """\
rating: {rate_tables: {t: rates.csv}, packages: {p: {rate_table: t}}}
customers:
  - {id: c, name: C, reference: C-1, country: FR, domains: [c.test], default_package: p,
     accounts: [{extension: "100", username: "100", password: pw100}]}
"""


def cutoffs(reason: str) -> float:
    return REGISTRY.get_sample_value("sipcore_call_cutoffs_total", {"reason": reason}) or 0.0


def port_of(p: Platform) -> int:
    assert p.app.admin_address is not None
    return p.app.admin_address[1]


def ledger_rows(p: Platform) -> list[tuple[str, str, int, str | None]]:
    db = sqlite3.connect(p.app.billing.ledger_path)
    try:
        return db.execute(
            "SELECT customer_id, kind, amount_micros, operation_id FROM ledger ORDER BY id"
        ).fetchall()
    finally:
        db.close()


async def test_registrations_listed_and_filtered(tmp_path: Path) -> None:
    async with admin_platform(tmp_path) as p:
        alice = await p.phone("1001")
        await p.phone("1002")
        prepaid = await p.phone("3001", domain=PREPAID_DOMAIN)
        status, all_ = await api(port_of(p), "GET", "/registrations")
        assert status == 200 and all_["count"] == 3
        assert {r["account"] for r in all_["registrations"]} == {"demo/1001", "demo/1002", "pre/3001"}
        status, one = await api(port_of(p), "GET", "/registrations?account=demo/1001")
        assert status == 200 and one["count"] == 1
        reg = one["registrations"][0]
        assert reg["contact"] == alice.contact.strip("<>") and reg["source"] == f"127.0.0.1:{alice.port}"
        assert (reg["transport"], reg["customer"], reg["aor"]) == (
            "udp",
            "demo",
            "sip:1001@demo.sipcore.test",
        )
        assert 590 <= reg["expires_in"] <= 600 and reg["expires"]
        status, pre = await api(port_of(p), "GET", "/registrations?customer=pre")
        assert [r["contact"] for r in pre["registrations"]] == [prepaid.contact.strip("<>")]
        assert (await api(port_of(p), "GET", "/registrations?customer=nobody"))[0] == 404
        assert (await api(port_of(p), "GET", "/registrations?acount=demo/1001"))[0] == 400


async def test_calls_listed_and_hung_up_with_bye_to_both_and_one_cdr(tmp_path: Path) -> None:
    async with admin_platform(tmp_path) as p:
        alice = await p.phone("1001")
        bruno = await p.phone("1002")
        dlg = await alice.call("1002")
        ok = await alice.response(dlg.call_id)
        alice.ack(dlg, ok)
        await bruno.request("ACK")
        before = cutoffs("admin")
        status, listed = await api(port_of(p), "GET", "/calls")
        assert status == 200 and listed["count"] == 1 and listed["workers_missing"] == []
        call = listed["calls"][0]
        assert (call["call_id"], call["state"], call["caller_account"]) == (
            dlg.call_id,
            "answered",
            "demo/1001",
        )
        assert (call["callee"], call["callee_account"], call["billed_account"]) == (
            "1002",
            "demo/1002",
            "demo/1001",
        )
        assert call["start"] and call["answer"] and call["duration"] >= 0
        status, done = await api(port_of(p), "DELETE", f"/calls/{dlg.call_id}")
        assert (status, done) == (200, {"call_id": dlg.call_id, "hung_up": True})
        assert (await bruno.request("BYE", timeout=5)).call_id == dlg.call_id
        assert (await alice.request("BYE", timeout=5)).call_id == dlg.call_id
        assert [(e.call_id, e.disposition, e.hangup_by) for e in p.ended] == [
            (dlg.call_id, "answered", "system")
        ]
        assert cutoffs("admin") == before + 1
        assert (await api(port_of(p), "GET", "/calls"))[1]["count"] == 0
        assert (await api(port_of(p), "DELETE", f"/calls/{dlg.call_id}"))[0] == 404


async def test_ringing_call_hung_up_is_cancelled_and_the_caller_gets_487(tmp_path: Path) -> None:
    async with admin_platform(tmp_path) as p:
        alice = await p.phone("1001")
        bruno = await p.phone("1002", mode="ring")
        dlg = await alice.call("1002")
        assert (await alice.response(dlg.call_id, final=False)).status == 180
        calls = (await api(port_of(p), "GET", "/calls"))[1]["calls"]
        assert [(c["call_id"], c["state"], c["answer"]) for c in calls] == [(dlg.call_id, "ringing", None)]
        assert (await api(port_of(p), "DELETE", f"/calls/{dlg.call_id}"))[0] == 200
        assert (await bruno.request("CANCEL", timeout=5)).call_id == dlg.call_id
        assert (await alice.response(dlg.call_id, timeout=5)).status == 487
        assert [(e.disposition, e.hangup_by) for e in p.ended] == [("cancelled", "system")]


@pytest.mark.parametrize("counters", ["memory", "redis"])
async def test_prepaid_customer_paid_through_the_api_calls_again_without_restart(
    tmp_path: Path, counters: str
) -> None:
    prefix = f"sipcore-test-admin-{secrets.token_hex(4)}:"
    try:
        await _prepaid_paid(tmp_path, counters, prefix)
        # a restart reads the ledger (memory) or finds Redis holding the payment (redis): counted once
        async with admin_platform(tmp_path, keep_config=True) as p:
            status, balance = await api(port_of(p), "GET", "/balances/pre")
            assert status == 200 and balance["balance"] == balance["ledger_balance"]
            spent = Decimal("1.50") - Decimal(balance["balance"])
            assert Decimal(0) <= spent <= Decimal("0.05"), balance  # one short call at most, paid once
    finally:
        await drop_prefix(prefix)


async def _prepaid_paid(tmp_path: Path, counters: str, prefix: str) -> None:
    async with admin_platform(tmp_path, counters=counters, prefix=prefix) as p:
        port = port_of(p)
        # the opening 0.02 charged away: balance 0, the next call is refused
        status, charged = await api(
            port, "POST", "/balances/pre/charges", {"amount": "0.02", "operation_id": "c-1"}
        )
        assert status == 201 and charged["balance"] == "0.00" and charged["duplicate"] is False
        caller = await p.phone("3001", domain=PREPAID_DOMAIN)
        dlg = await caller.call("0700123456")
        assert (await caller.response(dlg.call_id)).status == 402
        status, paid = await api(
            port, "POST", "/balances/pre/payments", {"amount": "1.50", "operation_id": "p-1", "note": "card"}
        )
        assert status == 201
        assert (paid["kind"], paid["amount"], paid["balance"], paid["note"]) == (
            "payment",
            "1.50",
            "1.50",
            "card",
        )
        status, balance = await api(port, "GET", "/balances/pre")
        assert status == 200 and (balance["balance"], balance["ledger_balance"]) == ("1.50", "1.50")
        assert (balance["mode"], balance["currency"], balance["counters"]) == ("HARD", "EUR", counters)
        dlg = await caller.call("0700123456")
        ok = await caller.response(dlg.call_id)
        assert ok.status == 200  # no restart
        caller.ack(dlg, ok)
        await p.trunk.request("ACK")
        caller.in_dialog(dlg, "BYE")
        assert (await caller.response(dlg.call_id, "BYE")).status == 200


async def test_a_repeated_operation_id_is_applied_once(tmp_path: Path) -> None:
    async with admin_platform(tmp_path) as p:
        port = port_of(p)
        body = {"amount": "20.00", "operation_id": "pay-42", "note": "transfer"}
        first = await api(port, "POST", "/balances/demo/payments", body)
        again = await api(port, "POST", "/balances/demo/payments", body)
        assert (first[0], again[0]) == (201, 200)
        assert again[1]["duplicate"] is True and again[1]["ledger_id"] == first[1]["ledger_id"]
        assert again[1]["balance"] == first[1]["balance"] == "20.00"
        assert ledger_rows(p) == [("demo", "payment", 20_000_000, "pay-42")]
        # the same id for another movement is a conflict, and writes nothing
        other = await api(port, "POST", "/balances/demo/payments", {"amount": "5", "operation_id": "pay-42"})
        assert other[0] == 409
        charge = await api(
            port, "POST", "/balances/demo/charges", {"amount": "20.00", "operation_id": "pay-42"}
        )
        assert charge[0] == 409
        assert len(ledger_rows(p)) == 1
        assert (await api(port, "GET", "/balances/demo"))[1]["balance"] == "20.00"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"amount": True, "operation_id": "x"}, "decimal string"),
        ({"amount": "-1", "operation_id": "x"}, "positive"),
        ({"amount": "0.0000001", "operation_id": "x"}, ""),  # finer than a micro-unit: refused, not rounded
        ({"amount": "1"}, "operation_id"),
        ({"amount": "2000000000", "operation_id": "x"}, "maximum"),  # beyond MAX_AMOUNT (rating.money)
        ({"amount": "1", "operation_id": "x", "memo": "?"}, "unknown"),
    ],
)
async def test_malformed_movements_are_refused_and_write_nothing(
    tmp_path: Path, body: dict, why: str
) -> None:
    async with admin_platform(tmp_path) as p:
        status, answer = await api(port_of(p), "POST", "/balances/demo/payments", body)
        assert status == 400 and why in answer["error"]
        assert ledger_rows(p) == []
    assert (await _unknown_customer(tmp_path / "other")) == 404


async def _unknown_customer(directory: Path) -> int:
    async with admin_platform(directory) as p:
        return (
            await api(port_of(p), "POST", "/balances/nobody/payments", {"amount": "1", "operation_id": "y"})
        )[0]


async def test_a_configured_token_is_required(tmp_path: Path) -> None:
    token = "s3cret-admin-token-0123456789"
    async with admin_platform(tmp_path, token=token) as p:
        port = port_of(p)
        assert (await api(port, "GET", "/status"))[0] == 401
        assert (await api(port, "GET", "/status", token="wrong-token-0123456789"))[0] == 401
        assert (await api(port, "POST", "/balances/demo/payments", {"amount": "1", "operation_id": "t"}))[
            0
        ] == 401
        assert ledger_rows(p) == []
        status, answer = await api(port, "GET", "/status", token=token)
        assert status == 200 and answer["workers"] == 1
        # the CLI reads the token from the configuration's token_file
        config = p.app.loaded.path
        assert config is not None
        rc, out, err = await cli(
            "balance", "pay", "--customer", "demo", "--amount", "2.50", "--config", config, "--json"
        )
        assert rc == 0, err
        assert json.loads(out)["balance"] == "2.50"
        (tmp_path / "wrong.token").write_text("not-the-admin-token-0000\n")
        rc, out, err = await cli("status", "--config", config, "--token-file", str(tmp_path / "wrong.token"))
        assert rc == 1 and err.startswith("401: ")
        assert [row[2] for row in ledger_rows(p)] == [2_500_000]


def test_a_non_loopback_admin_address_needs_a_token(tmp_path: Path) -> None:
    base = "server: {state_dir: '%s', metrics: null, admin: %s}\n" + ONE_CUSTOMER
    (tmp_path / "rates.csv").write_text(
        "prefix,destination,category,cost_per_minute\n+331,France,fixed,0.01\n"
    )
    with pytest.raises(ConfigError, match="token_file"):
        load_config_text(base % (tmp_path, "{listen: 0.0.0.0:9091}"), tmp_path)
    with pytest.raises(ConfigError, match="token_file"):
        load_config_text(base % (tmp_path, "{listen: 192.0.2.7:9091}"), tmp_path)
    (tmp_path / "t").write_text("a-long-enough-token-0123456789\n")
    cfg = load_config_text(base % (tmp_path, "{listen: 0.0.0.0:9091, token_file: t}"), tmp_path)
    assert cfg.server.admin is not None and cfg.server.admin.token_file == "t"
    cfg = load_config_text(base % (tmp_path, "{listen: '[::1]:9091'}"), tmp_path)
    assert cfg.server.admin is not None and cfg.server.admin.listen.host == "::1"
    with pytest.raises(ConfigError, match="file not found"):
        load_config_text(base % (tmp_path, "{listen: 0.0.0.0:9091, token_file: missing}"), tmp_path)


async def test_status_and_reload(tmp_path: Path) -> None:
    async with admin_platform(tmp_path) as p:
        await p.phone("1001")
        port = port_of(p)
        status, answer = await api(port, "GET", "/status")
        assert status == 200
        assert (answer["workers"], answer["registrations"], answer["active_calls"]) == (1, 1, 0)
        assert answer["config"] == p.app.loaded.path and answer["last_reload"] is None
        assert answer["version"] and answer["uptime_s"] >= 0
        status, reloaded = await api(port, "POST", "/reload")  # what SIGHUP does: Application.reload()
        assert status == 200 and reloaded["result"]["status"] == "applied", reloaded
        assert (await api(port, "GET", "/status"))[1]["last_reload"]["result"] == reloaded["result"]
        Path(p.app.loaded.path).write_text("customers: [\n", encoding="utf-8")  # a broken file
        status, refused = await api(port, "POST", "/reload")
        assert status == 200 and refused["result"]["status"] == "refused" and refused["result"]["errors"]
        assert (await api(port, "GET", "/status"))[1]["last_reload"]["result"]["status"] == "refused"
        assert (await api(port, "GET", "/reload"))[0] == 405
        assert (await api(port, "GET", "/nothing"))[0] == 404
        assert (await api(port, "POST", "/balances/demo/payments", raw=b"{not json"))[0] == 400


def test_decimal_amounts_are_exact() -> None:
    from server.admin import _movement

    assert _movement({"amount": "0.000001", "operation_id": "a"})[0] == Decimal("0.000001")
    assert _movement({"amount": Decimal("19.99"), "operation_id": "a"})[0] == Decimal(
        "19.99"
    )  # a JSON number


async def test_balance_add_payment_goes_through_the_running_server(tmp_path: Path) -> None:
    """`sipcore balance add-payment` with a server running: recorded once and applied live, never a
    ledger row the running server would only read at its next start."""
    async with admin_platform(tmp_path) as p:
        config = p.app.loaded.path
        assert config is not None
        rc, out, err = await cli(
            "balance", "add-payment", "--customer", "demo", "--amount", "3.25", "--config", config
        )
        assert rc == 0, err
        assert "applied live" in out
        status, answer = await api(port_of(p), "GET", "/balances/demo")
        assert status == 200 and answer["balance"] == "3.25"
        assert [row[2] for row in ledger_rows(p)] == [3_250_000]
