"""Schema errors come back all at once, each at the YAML line and column of the offending key."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from config.loader import ConfigError, load_config, load_config_text
from config.values import HostPort, Pulse

from .conftest import BASE


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_minimal_config_loads_with_defaults(write_config: Callable[..., Path]) -> None:
    cfg = load_config(write_config())
    assert cfg.server.listen.udp == (HostPort("0.0.0.0", 5060),)
    assert cfg.server.listen.tcp == (HostPort("0.0.0.0", 5070),)
    assert cfg.server.metrics == HostPort("127.0.0.1", 9090)
    assert cfg.registrar.location.backend == "memory"
    assert cfg.cdr.backend == "sqlite"
    assert cfg.proxy.feature_codes.permanent.set == "*21*X#"
    assert cfg.proxy.feature_codes.busy.clear == "#67#"
    assert cfg.rating.packages["pro"].pulse == Pulse(60, 60)


def test_money_in_yaml_is_exact_decimal(write_config: Callable[..., Path]) -> None:
    text = BASE.replace("markup: {fixed: 0.0025, percent: 20}", 'markup: {fixed: 0.1, percent: "12.5"}')
    cfg = load_config(write_config(text))
    markup = cfg.rating.packages["pro"].markup
    assert markup.fixed == Decimal("0.1")
    assert str(markup.fixed) == "0.1"  # not 0.1000000000000000055511151231257827
    assert markup.percent == Decimal("12.5")


def test_unknown_key_is_located_with_a_suggestion(write_config: Callable[..., Path]) -> None:
    text = BASE.replace("password: secret2}", "pasword: secret2}")
    path = write_config(text)
    errors = _errors(path)
    assert errors == [
        f"{path}:24:44: customers[0].accounts[1].pasword: unknown key 'pasword' (did you mean 'password'?)"
    ]


def test_all_schema_errors_are_reported_at_their_lines(write_config: Callable[..., Path]) -> None:
    path = write_config(
        """\
        server:
          listen:
            udp: ["0.0.0.0:5060", "[::]:99999"]
          workers: 0
          log: {format: xml}
        registrar:
          expires: {min: 600, default: 60}
          location: {backend: etcd}
        cdr: {backend: postgresql}
        rating:
          packages:
            p: {rate_table: t, pulse: 30/0, markup: {fixed: -1}}
        customers:
          - id: c
            name: C
            country: XX
            domains: []
        """
    )
    errors = _errors(path)
    expected = [
        (3, "server.listen.udp[1]: port must be 1-65535"),
        (4, "server.workers: Input should be greater than or equal to 1"),
        (5, "server.log.format: Input should be 'auto', 'json' or 'console'"),
        (7, "registrar.expires: need min <= default <= max"),
        (8, "registrar.location: Input tag 'etcd' found using 'backend' does not match"),
        (9, "cdr.dsn: this key is required"),
        (12, "rating.packages.p.pulse: pulse increments must be at least 1 second"),
        (12, "rating.packages.p.markup.fixed: must not be negative"),
        (14, "customers[0].reference: this key is required"),
        (16, "customers[0].country: 'XX' is not an ISO 3166 country code"),
        (17, "customers[0].domains: Tuple should have at least 1 item"),
    ]
    for line, text in expected:
        assert any(e.startswith(f"{path}:{line}:") and text in e for e in errors), (line, text, errors)
    assert len(errors) == len(expected)


def test_feature_codes_are_validated(write_config: Callable[..., Path]) -> None:
    codes = '    busy: {set: "*21*X#", clear: "#21#"}\n    permanent: {set: "21X", clear: "#1#"}\n'
    text = BASE + "proxy:\n  feature_codes:\n" + codes
    path = write_config(text)
    errors = _errors(path)
    assert errors == [
        f"{path}:28:5: proxy.feature_codes.permanent: "
        "set code '21X' must be * or #, digits, then X# (e.g. *21*X#)"
    ]  # the clash of busy with the default permanent code shows once every code is valid:
    text = BASE + 'proxy:\n  feature_codes:\n    busy: {set: "*21*X#", clear: "#21#"}\n'
    errors = _errors(write_config(text))
    assert any("feature codes used twice: #21#, *21*X#" in e for e in errors)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("- a\n- b\n", tmp_path, "list.yaml")
    assert (
        str(info.value.problems[0])
        == "list.yaml:1:1: the file must be a mapping of sections (server, customers…)"
    )


def test_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read file" in info.value.problems[0].reason


def test_config_objects_are_frozen(write_config: Callable[..., Path]) -> None:
    cfg = load_config(write_config())
    with pytest.raises(Exception, match="frozen"):
        cfg.server.workers = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.rating.packages["x"] = cfg.rating.packages["pro"]  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.logins[("a", "b")] = cfg.logins[("acme.test", "alice")]  # type: ignore[index]


@pytest.mark.parametrize(
    ("key", "ok", "too_precise", "limit"),
    [
        ("fixed", "0.000000001", "0.0000000001", 9),  # per-minute rates: 9 decimals
        ("percent", "12.3456", "12.34567", 4),
    ],
)
def test_money_precision_edges_are_errors_not_roundings(
    write_config: Callable[..., Path], key: str, ok: str, too_precise: str, limit: int
) -> None:
    markup = "markup: {fixed: 0.0025, percent: 20}"
    good = BASE.replace(markup, f'markup: {{{key}: "{ok}"}}')
    cfg = load_config(write_config(good))
    assert getattr(cfg.rating.packages["pro"].markup, key) == Decimal(ok)
    bad = BASE.replace(markup, f'markup: {{{key}: "{too_precise}"}}')
    errors = _errors(write_config(bad))
    assert len(errors) == 1
    assert f"{too_precise} has more than {limit} decimals" in errors[0]
    trailing = BASE.replace(markup, f'markup: {{{key}: "{ok}000"}}')  # trailing zeros are not precision
    assert getattr(load_config(write_config(trailing)).rating.packages["pro"].markup, key) == Decimal(ok)


def test_fees_and_balances_are_exact_to_the_micro_unit(write_config: Callable[..., Path]) -> None:
    text = BASE.replace("default_package: pro", "default_package: pro\n    balance: {initial: -1.000001}")
    assert load_config(write_config(text)).customers_by_id["acme"].balance.initial == Decimal("-1.000001")
    text = BASE.replace("default_package: pro", "default_package: pro\n    balance: {initial: 1.0000001}")
    assert "has more than 6 decimals" in _errors(write_config(text))[0]
    text = BASE.replace("included_categories: [fixed]", "included_categories: [fixed]\n      monthly_fee: -1")
    assert "must not be negative" in _errors(write_config(text))[0]


def test_wrong_shapes_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("trunks: [a, b]\ncustomers: {a: 1}\n", tmp_path, "s.yaml")
    assert [str(p) for p in info.value.problems] == [
        "s.yaml:1:1: trunks: expected a mapping (key: value lines or {key: value})",
        "s.yaml:2:1: customers: expected a list ([a, b] or '- ' lines)",
    ]
