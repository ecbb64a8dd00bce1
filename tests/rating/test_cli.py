"""`sipcore rates …`, `sipcore balance …` and `sipcore rate …` driven through the real CLI entry point."""

from __future__ import annotations

import json
import os
import shutil
import stat
from decimal import Decimal as D
from pathlib import Path

import pytest

from rating.rate_files import read_rate_file
from server.cli import main

ROOT = Path(__file__).parents[2]


def test_rates_import_then_export_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = ROOT / "config" / "rates" / "example.csv"
    assert main(["rates", "import", str(src), "--name", "carrier", "--dir", str(tmp_path / "rates")]) == 0
    stored = tmp_path / "rates" / "carrier.csv"
    assert "imported 18 rows" in capsys.readouterr().out
    xlsx = tmp_path / "carrier.xlsx"
    assert main(["rates", "export", str(stored), "--out", str(xlsx)]) == 0
    back = tmp_path / "back.csv"
    assert main(["rates", "import", str(xlsx), "--out", str(back)]) == 0
    assert read_rate_file(back).rows == tuple(sorted(read_rate_file(src).rows, key=lambda r: r.prefix))
    assert main(["rates", "check", str(back)]) == 0


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_rates_import_writes_a_table_the_service_user_can_read(tmp_path: Path, umask: int) -> None:
    """mkstemp's 0600 kept a service running as its own user from reading an imported table: the
    table gets the mode of any new file (0666 less the umask)."""
    src = ROOT / "config" / "rates" / "example.csv"
    old = os.umask(umask)
    try:
        assert main(["rates", "import", str(src), "--out", str(tmp_path / "carrier.csv")]) == 0
        assert main(["rates", "export", str(src), "--out", str(tmp_path / "carrier.xlsx")]) == 0
    finally:
        os.umask(old)
    for name in ("carrier.csv", "carrier.xlsx"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_bad_import_reports_rows_and_leaves_the_old_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "carrier.csv"
    shutil.copy(ROOT / "config" / "rates" / "example.csv", target)
    before = target.read_bytes()
    bad = tmp_path / "new.csv"
    bad.write_text("prefix,destination,category,cost_per_minute\n+33,France,fixed,0.01\n+34,Spain,fixed,x\n")
    assert main(["rates", "import", str(bad), "--out", str(target)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: cost_per_minute" in err and "nothing imported" in err
    assert target.read_bytes() == before
    assert list(tmp_path.glob(".carrier.csv.*")) == []  # no temp file left behind


def test_balance_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The example's customer demo opens at 50.00 (balance.initial); movements add to it."""
    db = str(tmp_path / "ledger.sqlite3")
    assert main(["balance", "add-payment", "--customer", "demo", "--amount", "20", "--db", db]) == 0
    args = ["balance", "add-charge", "--customer", "demo", "--amount", "17.5", "--memo", "hw", "--db", db]
    assert main([*args, "--threshold", "60"]) == 0
    captured = capsys.readouterr()
    assert "balance 52.500000" in captured.out
    assert "below threshold 60" in captured.err
    assert main(["balance", "show", "--customer", "demo", "--db", db, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["opening"], shown["balance"]) == ("50.000000", "52.500000")
    assert [(e["kind"], e["amount"], e["memo"]) for e in shown["entries"]] == [
        ("payment", "20.000000", ""),
        ("charge", "-17.500000", "hw"),
    ]
    assert main(["balance", "add-payment", "--customer", "demo", "--amount", "-3", "--db", db]) == 1


@pytest.fixture
def billed_config(tmp_path: Path) -> Path:
    """The example configuration with its demo customer billed (not internal)."""
    text = (ROOT / "config" / "example.yaml").read_text()
    assert "internal: true" in text
    (tmp_path / "rates").mkdir()
    shutil.copy(ROOT / "config" / "rates" / "example.csv", tmp_path / "rates" / "example.csv")
    path = tmp_path / "example.yaml"
    path.write_text(text.replace("internal: true", "internal: false"))
    return path


def test_rate_prices_a_call_like_the_rater(billed_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["rate", "--account", "demo/1001", "--to", "+33612345678", "--duration", "61"]
    assert main([*argv, "--at", "2026-11-22T10:00", "--config", str(billed_config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # package pro: 0.009 + 0.0025, +20 % = 0.0138/min, pulse 60 -> 120 s = 0.0276
    assert (out["allowed"], out["billed_seconds"]) == (True, 120)
    assert (out["price"], out["cost"]) == ("0.027600", "0.009150")
    assert (out["matched_prefix"], out["category"], out["package"]) == ("+336", "mobile", "pro")
    assert D(out["margin"]) == D("0.01845")
    assert main(["rate", "--account", "demo/1001", "--to", "+33145678901", "--duration", "61",
                 "--config", str(billed_config)]) == 0  # fmt: skip
    assert "included" in capsys.readouterr().out


def test_rate_reports_refusals(billed_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["rate", "--account", "demo/1002", "--to", "+33891234567", "--config", str(billed_config)]
    assert main([*argv, "--json"]) == 3  # demo/1002 blocks premium
    assert json.loads(capsys.readouterr().out)["refusal"] == "blocked_category"
    assert main(["rate", "--account", "nobody", "--to", "+33612345678", "--config", str(billed_config)]) == 1
