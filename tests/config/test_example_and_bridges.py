"""The shipped example.yaml, and the bridges to rating, routing and the registrar built from it."""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from config.bridge import initial_balances, rating_setup, registrar_view, routing_setup
from config.loader import ConfigError, default_config_path, load_config
from config.model import Config
from rating import model as rm
from rating.rater import Rater
from routing import model as ro

from .conftest import RATES_CSV

EXAMPLE = default_config_path()
EXAMPLE_RATES = EXAMPLE.parent / "rates" / "example.csv"


def test_embedded_default_is_the_packaged_example() -> None:
    assert EXAMPLE.name == "example.yaml"
    assert EXAMPLE.is_file()


def test_shipped_example_is_valid() -> None:
    """The only problem allowed is the rate file the rating helper ships, if not there yet."""
    if EXAMPLE_RATES.is_file():
        cfg = load_config()
        assert cfg.summary().customers == 1
        return
    with pytest.raises(ConfigError) as info:
        load_config(EXAMPLE)
    assert [p.reason for p in info.value.problems] == [f"rate file not found: {EXAMPLE_RATES}"]


@pytest.fixture
def example(tmp_path: Path) -> Config:
    """example.yaml as shipped, next to its real rate file or (until it exists) a test one."""
    shutil.copy(EXAMPLE, tmp_path / "example.yaml")
    (tmp_path / "rates").mkdir()
    if EXAMPLE_RATES.is_file():
        shutil.copy(EXAMPLE_RATES, tmp_path / "rates" / "example.csv")
    else:
        (tmp_path / "rates" / "example.csv").write_text(RATES_CSV, encoding="utf-8")
    return load_config(tmp_path / "example.yaml")


def test_example_content(example: Config) -> None:
    s = example.summary()
    assert (s.customers, s.accounts, s.dids) == (1, 3, 1)
    assert sorted(example.accounts) == ["demo/1001", "demo/1002", "demo/1003"]
    assert example.dids["+33184000001"].did.to.target == "1001"
    demo = example.customers_by_id["demo"]
    assert (demo.country, demo.dialing.national_prefix, demo.dialing.international_prefix) == (
        "FR",
        "0",
        "00",
    )
    trunk = example.trunks["carrier"]
    assert (trunk.address.host, trunk.address.port) == ("127.0.0.2", 5090)


def test_server_addresses_mean_the_default_domain(example: Config) -> None:
    assert example.domain_for_host("127.0.0.1") == "demo.sipcore.test"
    assert example.domain_for_host("LOCALHOST") == "demo.sipcore.test"
    assert example.domain_for_host("demo.sipcore.test") == "demo.sipcore.test"
    assert example.domain_for_host("evil.example") is None


def test_registrar_view_has_md5_ha1_per_login(example: Config) -> None:
    view = registrar_view(example)
    cred = view[("demo.sipcore.test", "1001")]
    assert cred.account_id == "demo/1001"
    assert cred.realm == "demo.sipcore.test"
    assert cred.ha1 == hashlib.md5(b"1001:demo.sipcore.test:demo1001pw").hexdigest()
    assert ("demo.sipcore.test", "9999") not in view


def test_rating_setup_builds_a_rater_that_prices_the_domain_example(example: Config) -> None:
    setup = rating_setup(example)
    pro = setup.packages["pro"]
    assert (pro.markup_fixed, pro.markup_percent, pro.pulse) == (
        Decimal("0.0025"),
        Decimal("20"),
        rm.PER_MINUTE,
    )
    assert setup.packages["pro_plus"].pulse == rm.Pulse(30, 6)
    assert setup.accounts["demo/1002"].package == "pro_plus"
    assert setup.accounts["demo/1001"].package == "pro"  # the customer's default_package
    assert setup.customers["demo"].internal is True
    assert setup.dids["+33184000001"].monthly_fee == Decimal("1.00")
    rater = Rater(setup)
    route = rater.match("demo/1001", "+33612345678")
    assert route is not None
    assert route.category == "mobile"
    assert initial_balances(example) == {"demo": Decimal("50.00")}


def test_rating_setup_prices_a_paying_customer(tmp_path: Path) -> None:
    """DOMAIN.md: cost 0.009 + 0.0025 fixed, +20 % = 0.0138/min; 61 s at pulse 60 bills 0.0276."""
    (tmp_path / "rates").mkdir()
    (tmp_path / "rates" / "t.csv").write_text(
        "prefix,destination,category,cost_per_minute\n+441,UK,international,0.009\n"
    )
    (tmp_path / "c.yaml").write_text(
        "rating:\n  rate_tables: {t: rates/t.csv}\n  packages:\n"
        "    p: {rate_table: t, markup: {fixed: 0.0025, percent: 20}, pulse: 60}\n"
        "customers:\n  - {id: c, name: C, reference: R, country: FR, domains: [c.test], default_package: p,\n"
        "     accounts: [{extension: '1001', username: u, password: pw}]}\n"
    )
    rater = Rater(rating_setup(load_config(tmp_path / "c.yaml")))
    call = rm.CallToRate(
        rm.Direction.OUTBOUND, "c/1001", "+441234567", datetime(2026, 11, 22, tzinfo=UTC), duration=61
    )
    rated = rater.rate(call)
    assert rated.price == Decimal("0.0276")


def test_routing_setup(example: Config) -> None:
    setup = routing_setup(example)
    alice = setup.find_user("demo.sipcore.test", "1001")
    assert alice is not None
    assert alice.account_id == "demo/1001"
    assert alice.outgoing_number == "+33184000001"
    rule = alice.forward(ro.ForwardKind.NO_ANSWER)
    assert rule is not None
    assert (rule.delay_seconds, rule.voicemail_last_resort) == (20, True)
    cust = setup.customers["demo"]
    assert cust.dialing.country_code == 33
    assert cust.groups["sales"].members == (ro.GroupMember("1002", 20), ro.GroupMember("1003", 20))
    assert setup.dids["+33184000001"] == ro.Did("+33184000001", "demo", ro.DidKind.ACCOUNT, "1001")
    assert setup.trunk == ro.Trunk("carrier", "sip:127.0.0.2:5090;transport=udp")
    assert setup.media_uri == "sip:127.0.0.1:5080"
    assert setup.support == "+33184000001"
    assert [(c.kind, c.set_prefix, c.clear_code) for c in setup.feature_codes] == [
        (ro.ForwardKind.PERMANENT, "*21*", "#21#"),
        (ro.ForwardKind.NO_ANSWER, "*61*", "#61#"),
        (ro.ForwardKind.BUSY, "*67*", "#67#"),
        (ro.ForwardKind.UNREACHABLE, "*62*", "#62#"),
    ]


def test_registrar_view_uses_a_configured_ha1_and_the_domain_as_default_realm(tmp_path: Path) -> None:
    ha1 = hashlib.md5(b"bob:b.test:pw").hexdigest().upper()
    (tmp_path / "c.yaml").write_text(
        "rating:\n  rate_tables: {}\n  packages: {}\n"
        "customers:\n  - {id: b, name: B, reference: R, country: BE, domains: [B.test], internal: true,\n"
        f"     accounts: [{{extension: '101', username: bob, ha1: {ha1}, package: x}}]}}\n"
    )
    with pytest.raises(ConfigError) as info:  # the package must exist even for internal customers
        load_config(tmp_path / "c.yaml")
    assert [p.reason for p in info.value.problems] == ["unknown package 'x' (none defined)"]
    (tmp_path / "c.yaml").write_text(
        (tmp_path / "c.yaml")
        .read_text()
        .replace("packages: {}", "packages: {x: {rate_table: t}}")
        .replace("rate_tables: {}", "rate_tables: {t: t.csv}")
    )
    (tmp_path / "t.csv").write_text("prefix,destination,category,cost_per_minute\n+32,Belgium,fixed,0.01\n")
    cfg = load_config(tmp_path / "c.yaml")
    cred = registrar_view(cfg)[("b.test", "bob")]
    assert (cred.realm, cred.ha1, cred.password) == ("b.test", ha1.lower(), None)
    assert cfg.domain_for_host("B.TEST.") == "b.test"
    assert cfg.domain_for_host("[::1]") is None  # no default_domain: the server's own address finds nobody


def test_ha1_needs_a_fixed_realm_when_a_customer_has_several_domains(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("prefix,destination,category,cost_per_minute\n+32,Belgium,fixed,0.01\n")
    (tmp_path / "c.yaml").write_text(
        "rating:\n  rate_tables: {t: t.csv}\n  packages: {x: {rate_table: t}}\n"
        "customers:\n  - {id: b, name: B, reference: R, country: BE, domains: [b.test, b2.test],\n"
        f"     accounts: [{{extension: '101', username: bob, ha1: {'0' * 32}, package: x}}]}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.yaml")
    assert [(p.line, p.reason) for p in info.value.problems] == [
        (6, "ha1 fits one realm: set registrar.realm when a customer has several domains")
    ]
