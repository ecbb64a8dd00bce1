"""Two hosts, one PostgreSQL ledger (issue 21): a payment posted through host A's admin API, and one
posted by `sipcore balance add-payment` while no server runs, are both seen by `sipcore balance show`
and counted at start by host B, whose own state directory holds no ledger file."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.pg_ledger import pg_ledger_at, pg_ledger_dsn  # noqa: F401 (fixtures)
from tests.server.admin_helpers import admin_config, admin_platform, api, cli

pytestmark = pytest.mark.timeout(60)


def host_config(directory: Path, dsn: str) -> Path:
    """A host's configuration (its own state directory, memory counters) with the shared ledger."""
    path = admin_config(directory, free_port(), free_port(), free_port())
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("rating:\n", f"rating:\n  ledger: {{backend: postgresql, dsn: '{dsn}'}}\n", 1)
    )
    return path


async def test_a_payment_on_host_a_is_counted_by_host_b(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ledger = request.getfixturevalue("pg_ledger_at")
    dsn = f"{ledger.dsn}?schema={ledger.schema}"
    a, b = tmp_path / "a", tmp_path / "b"
    host_config(a, dsn)
    config_b = host_config(b, dsn)
    async with admin_platform(a, keep_config=True) as host_a:
        assert host_a.app.admin_address is not None
        status, paid = await api(
            host_a.app.admin_address[1],
            "POST",
            "/balances/pre/payments",
            {"amount": "1.50", "operation_id": "a-1"},
        )
        assert status == 201 and paid["balance"] == "1.52"  # opening 0.02 + 1.50
    rc, out, err = await cli("balance", "show", "--customer", "pre", "--json", "--config", str(config_b))
    assert rc == 0, err
    shown = json.loads(out)
    assert Decimal(shown["balance"]) == Decimal("1.52")
    assert [Decimal(e["amount"]) for e in shown["entries"]] == [Decimal("1.50")]
    rc, out, err = await cli(
        "balance", "add-payment", "--customer", "pre", "--amount", "0.25", "--config", str(config_b)
    )
    assert rc == 0 and "no server running" in err, (out, err)
    async with admin_platform(b, keep_config=True) as host_b:
        assert host_b.app.admin_address is not None
        status, answer = await api(host_b.app.admin_address[1], "GET", "/balances/pre")
        assert status == 200
        assert (answer["balance"], answer["ledger_balance"]) == ("1.77", "1.77")
    assert not (a / "state" / "ledger.sqlite3").exists() and not (b / "state" / "ledger.sqlite3").exists()


def test_the_ledger_setting(tmp_path: Path) -> None:
    """`rating.ledger`: SQLite under state_dir by default (also with PostgreSQL CDRs), a PostgreSQL
    dsn with its schema, a dsn required, and a change needs a restart."""
    from config.diff import config_diff
    from config.loader import ConfigError, load_config_text
    from rating.ledger_store import PostgresLedgerAt, ledger_at
    from tests.config.conftest import BASE, RATES_CSV

    (tmp_path / "rates").mkdir()
    (tmp_path / "rates" / "test.csv").write_text(RATES_CSV, encoding="utf-8")

    def load(rating: str = "", top: str = "") -> object:
        text = BASE.replace("rating:\n", f"rating:\n{rating}", 1) + top
        return load_config_text(f"server: {{state_dir: {tmp_path / 'state'}}}\n" + text, tmp_path)

    pg_cdr = load(top="cdr: {backend: postgresql, dsn: 'postgresql://u@db/cdr'}\n")
    assert ledger_at(pg_cdr) == tmp_path / "state" / "ledger.sqlite3"
    assert ledger_at(load("  ledger: {backend: sqlite, path: books/l.db}\n")) == tmp_path / "state/books/l.db"
    shared = load("  ledger: {backend: postgresql, dsn: 'postgresql://u:pw@db/b?schema=books'}\n")
    assert ledger_at(shared) == PostgresLedgerAt("postgresql://u:pw@db/b", "books")
    assert str(ledger_at(shared)) == "postgresql://u@db/b?schema=books"  # no password in messages
    assert set(config_diff(pg_cdr, shared).needs_restart) == {"rating.ledger", "cdr"}
    with pytest.raises(ConfigError, match="dsn"):
        load("  ledger: {backend: postgresql}\n")
    with pytest.raises(ConfigError, match="not a PostgreSQL DSN"):
        load("  ledger: {backend: postgresql, dsn: 'sqlite:/var/ledger'}\n")
