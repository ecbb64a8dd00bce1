"""`sipcore check-config` output and exit status; the generated SIPp benchmark configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.make_bench_config import write_bench_config
from config.bridge import registrar_view
from config.loader import load_config
from server.cli import main

from .conftest import BASE


def test_check_config_ok_prints_a_summary(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config()
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out == f"{path}: OK: 1 customers, 2 accounts, 1 DIDs, 4 rate rows\n"


def test_check_config_prints_every_error_as_file_line_col(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE.replace('to: "1001"}', 'to: "1009"}').replace("username: bob", "username: alice")
    path = write_config(text)
    assert main(["check-config", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{path}:21:34: DID +33184000001: no account with extension 1009 in 'acme'",
        f"{path}:24:29: SIP username 'alice' is used twice in domain acme.test (first at line 23)",
    ]
    assert captured.err == f"{path}: 2 errors\n"


def test_check_config_reports_yaml_syntax_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("server:\n  workers: [1\n")
    assert main(["check-config", str(path)]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{path}:2:12: YAML syntax error: the '[' opened here is never closed")


def test_bench_config_has_the_sipp_accounts_in_the_default_domain(tmp_path: Path) -> None:
    cfg = load_config(write_bench_config(tmp_path / "bench.yaml"))
    assert cfg.summary().accounts == 10_001
    domain = cfg.domain_for_host("127.0.0.1")
    assert domain == cfg.default_domain
    view = registrar_view(cfg)
    for user in ("u10000", "u15000", "u19999", "callee"):
        cred = view[(domain, user)]
        assert cred.password == f"pw{user}"
    assert (domain, "u20000") not in view


def test_bench_config_lets_abandoned_calls_linger_without_refusing_the_next_search(tmp_path: Path) -> None:
    """A failing step's abandoned calls count until the server's timers end them (32 s): the callers
    and the callee take more than the product's default of 2 at once, as Kamailio's config has no limit."""
    cfg = load_config(write_bench_config(tmp_path / "bench.yaml", 20))
    limits = {a.username: a.max_calls for c in cfg.customers for a in c.accounts}
    assert limits["callee"] == 100_000
    assert {limits[f"u{n}"] for n in range(10000, 10020)} == {100}
