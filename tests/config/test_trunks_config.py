"""The trunk keys of issue 17 read and refused: ordered sets (proxy.outbound_trunks, a customer's
trunks), inbound sources with ports, number formats, caller-ID rules, probes and registration; each
bad value at its file and line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from config.bridge import routing_setup
from config.loader import ConfigError, load_config
from routing import TrunkChoice

from .conftest import BASE

TRUNKS = """\
trunks:
  a:
    address: "127.0.0.2:5090"
    inbound_sources: ["127.0.0.2:5090", "[::1]:5091", 192.0.2.0/24, 198.51.100.7]
    number_format: national
    country: FR
    caller_id: {format: e164_no_plus, default: "+33184000001", anonymous_allowed: false}
    probe_interval: 30s
    probe_failures: 2
    failover_timeout: 3
    register: {username: u, password: p, expires: 5m}
  b: {address: "carrier-b.example"}
"""


def _with_trunks(
    trunks: str,
    proxy: str = "proxy: {outbound_trunks: [{trunk: a, priority: 1, weight: 50}, {trunk: b, priority: 2}]}\n",
) -> str:
    start, end = BASE.index("trunks:\n"), BASE.index("rating:\n")
    return BASE[:start] + proxy + trunks + BASE[end:]


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_trunk_keys_are_read(write_config: Callable[..., Path]) -> None:
    cfg = load_config(write_config(_with_trunks(TRUNKS)))
    a = cfg.trunks["a"]
    assert a.inbound_sources == ("127.0.0.2:5090", "[::1]:5091", "192.0.2.0/24", "198.51.100.7/32")
    assert (a.number_format, a.country, a.probe_interval, a.probe_failures, a.failover_timeout) == (
        "national", "FR", 30, 2, 3,
    )  # fmt: skip
    assert a.caller_id.default == "+33184000001" and not a.caller_id.anonymous_allowed
    assert a.registration is not None and a.registration.expires == 300
    assert cfg.trunks["b"].registration is None and cfg.trunks["b"].probe_interval is None
    setup = routing_setup(cfg)
    assert setup.trunks == (TrunkChoice("a", 1, 50), TrunkChoice("b", 2, 1))
    assert setup.trunk.name == "a"


def test_a_customer_names_its_own_ordered_set(write_config: Callable[..., Path]) -> None:
    text = _with_trunks(TRUNKS).replace(
        "    default_package: pro\n",
        "    default_package: pro\n    trunks: [{trunk: b}, {trunk: a, priority: 2}]\n",
    )
    setup = routing_setup(load_config(write_config(text)))
    assert setup.customers["acme"].trunks == (TrunkChoice("b", 1, 1), TrunkChoice("a", 2, 1))


@pytest.mark.parametrize(
    ("change", "line", "reason"),
    [
        (('["127.0.0.2:5090"', '["127.0.0.2:99999"'), 8, "port 99999 is not between 1 and 65535"),
        (("198.51.100.7", "carrier.example:5060"), 8, "is not an IP address, network or address:port"),
        (("    country: FR\n", ""), 6, "the national number format needs the trunk's country"),
        (("number_format: national", "number_format: e.164"), 9, "number_format"),
        (("probe_failures: 2", "probe_failures: 0"), 13, "probe_failures"),
        (("expires: 5m", "expires: 0"), 15, "register.expires"),
        (("{trunk: b, priority: 2}", "{trunk: c, priority: 2}"), 4, "unknown trunk 'c' (known: 'a', 'b')"),
        (("{trunk: b, priority: 2}", "{trunk: a, priority: 2}"), 4, "trunk listed twice: a"),
        (("proxy: {outbound_trunks:", "proxy: {outbound_trunk: a, outbound_trunks:"), 4, "not both"),
    ],
)
def test_bad_trunk_settings_are_refused_at_their_line(
    write_config: Callable[..., Path], change: tuple[str, str], line: int, reason: str
) -> None:
    text = _with_trunks(TRUNKS)
    assert change[0] in text
    path = write_config(text.replace(change[0], change[1], 1))
    errors = _errors(path)
    assert any(e.startswith(f"{path}:{line}:") and reason in e for e in errors), errors


def test_several_trunks_need_a_choice_and_old_forms_keep_working(write_config: Callable[..., Path]) -> None:
    path = write_config(_with_trunks(TRUNKS, proxy=""))
    assert any("several trunks: say which one is proxy.outbound_trunk" in e for e in _errors(path))
    cfg = load_config(write_config(_with_trunks(TRUNKS, proxy="proxy: {outbound_trunk: b}\n"), "old.yaml"))
    setup = routing_setup(cfg)
    assert (setup.trunk.name, setup.trunks) == ("b", ())
