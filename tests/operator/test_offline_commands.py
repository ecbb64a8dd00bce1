"""Issue 17, items 3 and 4: `balance`, `report` and `rate` against the configuration — the opening
balance counted, the ledger and the CDR store found under the config's state_dir wherever the command
runs, unknown customers and accounts refused with a suggestion, dialed numbers normalised as routing
does, negative durations and counts refused."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdr.store_sqlite import SqliteCdrStore
from server.cli import main
from tests.cdr.factory import make_record
from tests.operator.conftest import Run, write_example


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The command runs from a directory that is not the server's."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    return other


# ------------------------------------------------------------------------------- item 3: balance
def test_balance_show_counts_the_configured_opening_balance(
    tmp_path: Path, elsewhere: Path, run: Run
) -> None:
    config = write_example(tmp_path / "etc", str(tmp_path / "state"))
    code, out, err = run("balance", "show", "--customer", "demo", "--config", str(config), "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "customer": "demo",
        "opening": "50.000000",
        "balance": "50.000000",
        "entries": [],
    }
    assert not (tmp_path / "state" / "ledger.sqlite3").exists()  # showing creates nothing


def test_balance_uses_the_ledger_under_the_configs_state_dir(
    tmp_path: Path, elsewhere: Path, run: Run
) -> None:
    state = tmp_path / "state"
    config = write_example(tmp_path / "etc", str(state))
    code, out, err = run(
        "balance", "add-payment", "--customer", "demo", "--amount", "20", "--config", str(config)
    )
    assert code == 0, err
    assert "balance 70.000000" in out
    assert (state / "ledger.sqlite3").is_file()  # where the server's billing reads it
    assert list(elsewhere.iterdir()) == []  # nothing relative to the working directory
    code, out, _ = run("balance", "show", "--customer", "demo", "--config", str(config))
    assert code == 0 and out.splitlines()[-1] == "balance demo: 70.000000"


def test_relative_state_dir_from_another_directory_is_refused(
    tmp_path: Path, elsewhere: Path, run: Run
) -> None:
    config = write_example(tmp_path / "etc", "var")
    argv = ("--customer", "demo", "--amount", "20", "--config", str(config))
    code, _, err = run("balance", "add-payment", *argv)
    assert code == 1
    assert f"no state directory {elsewhere / 'var'}" in err
    assert "relative to the server's working directory" in err
    assert list(elsewhere.iterdir()) == []  # no stray ledger a server would never read


@pytest.mark.parametrize(
    ("customer", "says"),
    [
        ("acme", "unknown customer 'acme' (configured: demo)"),
        ("dem", "unknown customer 'dem'; did you mean demo?"),
        ("1001", "unknown customer '1001'; '1001' looks like account demo/1001: use --customer demo"),
        ("demo/1002", "looks like account demo/1002: use --customer demo"),
    ],
)
def test_unknown_customer_is_refused_with_a_suggestion(
    tmp_path: Path, run: Run, customer: str, says: str
) -> None:
    config = write_example(tmp_path / "etc", str(tmp_path / "state"))
    for action in (["show"], ["add-payment", "--amount", "1"], ["add-charge", "--amount", "1"]):
        code, out, err = run("balance", *action, "--customer", customer, "--config", str(config))
        assert (code, out) == (1, "")
        assert says in err
    assert not (tmp_path / "state").exists()  # nothing written


# -------------------------------------------------------------------------------- item 3: report
def fill_store(path: Path) -> None:
    records = [
        make_record(i, customer_id="demo", customer_ref="CUST-0001", account_id="demo/1001",
                    start=datetime(2026, 1, 5 + i, tzinfo=UTC))
        for i in range(3)
    ]  # fmt: skip

    async def fill() -> None:
        store = SqliteCdrStore(path)
        await store.open()
        await store.migrate()
        await store.write_batch(records)
        await store.close()

    path.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(fill())


PERIOD = ("--from", "2026-01-01", "--to", "2026-01-31", "--format", "json")


def test_report_finds_the_store_under_the_configs_state_dir(
    tmp_path: Path, elsewhere: Path, run: Run
) -> None:
    state = tmp_path / "state"
    fill_store(state / "cdr.sqlite3")
    config = write_example(tmp_path / "etc", str(state))
    code, out, err = run("report", "calls", "--config", str(config), *PERIOD)
    assert code == 0, err
    assert len(json.loads(out)["rows"]) == 3


def test_report_with_a_relative_state_dir_elsewhere_says_why(
    tmp_path: Path, elsewhere: Path, run: Run
) -> None:
    config = write_example(tmp_path / "etc", "var")
    code, _, err = run("report", "calls", "--config", str(config), *PERIOD)
    assert code == 2
    assert "relative to the server's working directory" in err


def test_report_refuses_unknown_accounts_and_customers(tmp_path: Path, run: Run) -> None:
    state = tmp_path / "state"
    fill_store(state / "cdr.sqlite3")
    config = write_example(tmp_path / "etc", str(state))
    code, out, err = run("report", "account", "--account", "1001", "--config", str(config), *PERIOD)
    assert (code, out) == (2, "")
    assert (
        "unknown account '1001' (account ids are <customer id>/<extension>); did you mean demo/1001?" in err
    )
    code, out, err = run("report", "calls", "--customer", "nobody", "--config", str(config), *PERIOD)
    assert (code, out) == (2, "") and "unknown customer 'nobody'" in err
    # a configured account without calls in the period is a real, empty answer
    code, out, err = run("report", "account", "--account", "demo/1003", "--config", str(config), *PERIOD)
    assert code == 0, err
    assert json.loads(out)["rows"] == []


def test_report_without_config_refuses_names_the_store_never_saw(tmp_path: Path, run: Run) -> None:
    store = tmp_path / "cdr.sqlite3"
    fill_store(store)
    url = f"sqlite:{store}"
    code, out, err = run("report", "account", "--account", "1001", "--store", url, *PERIOD)
    assert (code, out) == (2, "")
    assert "account '1001' has no call in the store at all" in err and "did you mean demo/1001?" in err
    code, _, err = run("report", "calls", "--customer", "nobody", "--store", url, *PERIOD)
    assert code == 2 and "customer 'nobody' has no call in the store at all" in err
    code, out, _ = run("report", "account", "--account", "demo/1001", "--store", url, "--from", "2025-01-01",
                       "--to", "2025-01-31", "--format", "json")  # fmt: skip
    assert code == 0 and json.loads(out)["rows"] == []  # known account, no call in that period


# ----------------------------------------------------------------------------------- item 4: rate
def rate(run: Run, config: Path, *argv: str) -> tuple[int, dict[str, object], str]:
    code, out, err = run("rate", "--account", "demo/1001", "--config", str(config), "--at", "2026-11-22T10:00",
                         "--json", *argv)  # fmt: skip
    return code, (json.loads(out) if out else {}), err


@pytest.mark.parametrize(
    "dialed", ["+33612345678", "+33 6 12 34 56 78", "0612345678", "06 12 34 56 78", "0033612345678"]
)
def test_rate_accepts_what_a_phone_dials(tmp_path: Path, run: Run, dialed: str) -> None:
    config = write_example(tmp_path, str(tmp_path / "state"))
    code, out, err = rate(run, config, "--to", dialed, "--duration", "61")
    assert code == 0, err
    # +336 mobile, package pro: (0.009 + 0.0025) x 1.2 = 0.0138/min, pulse 60 -> 120 s
    assert (out["to"], out["category"], out["price"]) == ("+33612345678", "mobile", "0.027600")


@pytest.mark.parametrize("dialed", ["12", "+33", "abc", "1002"])
def test_rate_refuses_what_is_not_a_number(tmp_path: Path, run: Run, dialed: str) -> None:
    config = write_example(tmp_path, str(tmp_path / "state"))
    code, out, err = rate(run, config, "--to", dialed)
    assert (code, out) == (1, {})
    assert f"--to {dialed!r} is not a telephone number for demo/1001" in err


def test_rate_refuses_an_unknown_account_with_a_suggestion(tmp_path: Path, run: Run) -> None:
    config = write_example(tmp_path, str(tmp_path / "state"))
    code, out, err = run("rate", "--account", "1002", "--to", "+33612345678", "--config", str(config))
    assert (code, out) == (1, "")
    assert "did you mean demo/1002?" in err


@pytest.mark.parametrize("option", ["--duration", "--free-used"])
def test_rate_refuses_negative_durations_and_counts(
    tmp_path: Path, run: Run, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_example(tmp_path, str(tmp_path / "state"))
    with pytest.raises(SystemExit) as stop:
        main(
            ["rate", "--account", "demo/1001", "--to", "+33612345678", "--config", str(config), option, "-1"]
        )
    assert stop.value.code == 2
    assert f"argument {option}: must not be negative, got -1" in capsys.readouterr().err
    code, _, err = rate(run, config, "--to", "+33612345678", option, "0")  # the edge: 0 is fine
    assert code == 0, err


def test_rate_duration_is_bounded_by_the_longest_call(tmp_path: Path, run: Run) -> None:
    config = write_example(tmp_path, str(tmp_path / "state"))  # proxy.max_call_duration: 4h
    code, out, err = rate(run, config, "--to", "+33612345678", "--duration", "14400")
    assert code == 0 and out["billed_seconds"] == 14400, err
    code, out, err = rate(run, config, "--to", "+33612345678", "--duration", "14401")
    assert (code, out) == (1, {})
    assert "longer than any call can last (proxy.max_call_duration 14400 s ends it)" in err


def test_balance_show_limit_edges(tmp_path: Path, run: Run) -> None:
    config = write_example(tmp_path / "etc", str(tmp_path / "state"))
    for amount in ("1", "2"):
        assert (
            run("balance", "add-payment", "--customer", "demo", "--amount", amount, "--config", str(config))[
                0
            ]
            == 0
        )
    code, out, _ = run(
        "balance", "show", "--customer", "demo", "--config", str(config), "--limit", "1", "--json"
    )
    shown = json.loads(out)
    assert code == 0 and [e["amount"] for e in shown["entries"]] == ["2.000000"]
    assert shown["balance"] == "53.000000"  # the limit shortens the list, never the balance
    code, _, err = run("balance", "show", "--customer", "demo", "--config", str(config), "--limit", "0")
    assert code == 1 and "--limit must be at least 1, got 0" in err
