"""Cross-reference and file checks: every one reported, each at the line of the offending value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from config.loader import ConfigError, load_config

from .conftest import BASE


def _problems(path: Path) -> list[tuple[int, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert all(p.file == str(path) for p in info.value.problems)
    return [(p.line, p.reason) for p in info.value.problems]


BROKEN = """\
default_domain: elsewhere.test
registrar:
  nonce_secret: test-secret-0123456789
trunks:
  a: {address: "127.0.0.1:5090"}
  b: {address: "127.0.0.2:5090"}
rating:
  rate_tables: {carrier: rates/test.csv, gone: rates/gone.csv, sheet: rates/test.ods}
  packages:
    pro: {rate_table: carrier, included_categories: [fixed, fixd]}
    lost: {rate_table: nowhere}
customers:
  - id: acme
    name: ACME
    reference: REF-1
    country: FR
    domains: [acme.test]
    trunk: c
    dids:
      - {number: "+33184000001", to: "1009"}
      - {number: "+33184000002", to: "group:support"}
      - {number: "+33184000003", to: "voicemail:1002"}
    groups:
      sales: {members: [{extension: "1001"}, {extension: "1005"}]}
    accounts:
      - {extension: "1001", username: alice, password: x, package: pro, outgoing_number: "+33999999999"}
      - {extension: "1002", username: bob, password: x}
      - {extension: "1001", username: alice, password: x, package: nope}
      - {extension: "2222", username: carol, password: x, package: pro}
      - extension: "1003"
        username: dave
        password: x
        package: pro
        forwarding:
          permanent: {to: "1003"}
          no_answer: {voicemail: true}
  - id: acme
    name: Other
    reference: REF-2
    country: FR
    domains: [acme.test, other.test]
    dids:
      - {number: "+33184000001", to: hangup}
"""


def test_every_semantic_error_is_reported_at_its_line(write_config: Callable[..., Path]) -> None:
    problems = _problems(write_config(BROKEN))
    expected = [
        (1, "default_domain 'elsewhere.test' is not a customer's domain"),
        (4, "several trunks: say which one is proxy.outbound_trunk"),
        (8, "rate file not found: "),
        (8, "rate file 'rates/test.ods' must be .csv or .xlsx"),
        (
            10,
            "category 'fixd' is not in rate table 'carrier' (fixed, international, mobile, premium)",
        ),
        (11, "package 'lost': unknown rate table 'nowhere' (known: 'carrier', 'gone', 'sheet')"),
        (18, "unknown trunk 'c' (known: 'a', 'b')"),
        (20, "DID +33184000001: no account with extension 1009 in 'acme'"),
        (21, "DID +33184000002: unknown group 'support' (known: 'sales')"),
        (22, "DID +33184000003: account 1002 has voicemail off"),
        (24, "group 'sales': no account with extension 1005"),
        (26, "outgoing number +33999999999 is not one of the DIDs of customer 'acme'"),
        (27, "no package: set the account's package or the customer's default_package"),
        (28, "extension 1001 is used twice in customer 'acme' (first at line 26)"),
        (28, "SIP username 'alice' is used twice in domain acme.test (first at line 26)"),
        (28, "unknown package 'nope' (known: 'lost', 'pro')"),
        (29, "extension 2222 is reserved (2000/2020/2222 are short codes)"),
        (30, "account 1003 uses voicemail as last resort but has voicemail off"),
        (35, "permanent forwarding of 1003 points to itself"),
        (37, "customer id 'acme' is used twice"),
        (41, "domain 'acme.test' is used twice (first at line 17)"),
        (43, "DID +33184000001 is defined twice (first at line 20)"),
    ]
    for line, text in expected:
        assert any(pl == line and text in reason for pl, reason in problems), (line, text, problems)
    assert len(problems) == len(expected), problems
    assert problems == sorted(problems, key=lambda p: p[0])


def test_duplicate_did_across_customers_alone(write_config: Callable[..., Path]) -> None:
    text = (
        BASE
        + """\
  - id: other
    name: Other
    reference: REF-2
    country: FR
    domains: [other.test]
    dids:
      - {number: "+33184000001", to: hangup}
"""
    )
    assert _problems(write_config(text)) == [(31, "DID +33184000001 is defined twice (first at line 21)")]


def test_rate_file_rows_are_reported_with_their_file_and_row(write_config: Callable[..., Path]) -> None:
    path = write_config()
    bad = path.parent / "rates" / "test.csv"
    bad.write_text("prefix,destination,category,cost_per_minute\n+331,Fixed,fixed,0.009\nx,Bad,fixed,abc\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.file == str(bad)
    assert problem.line == 3
    assert "prefix" in problem.reason


def test_shared_state_needs_a_shared_nonce_secret(write_config: Callable[..., Path]) -> None:
    text = BASE.replace("registrar:\n  nonce_secret: test-secret-0123456789\n", "server: {workers: 2}\n")
    problems = _problems(write_config(text))
    assert problems == [
        (1, "several workers or a shared location store need a shared nonce_secret (or nonce_secret_file)")
    ]


def test_nonce_secret_file_is_read_relative_to_the_yaml(write_config: Callable[..., Path]) -> None:
    text = BASE.replace("nonce_secret: test-secret-0123456789", "nonce_secret_file: secret.txt")
    path = write_config(text)
    assert _problems(path) == [(3, f"file not found: {path.parent / 'secret.txt'}")]
    (path.parent / "secret.txt").write_text("short\n")
    assert _problems(path) == [(3, f"{path.parent / 'secret.txt'}: secret must be at least 16 bytes")]
    (path.parent / "secret.txt").write_text("0123456789abcdef-long-enough\n")
    assert load_config(path).nonce_secret == b"0123456789abcdef-long-enough"


def test_voicemail_destination_and_forward_loops_pass_when_consistent(
    write_config: Callable[..., Path],
) -> None:
    text = BASE.replace('to: "1001"}', 'to: "voicemail:1001"}').replace(
        '{extension: "1001", username: alice, password: secret1}',
        '{extension: "1001", username: alice, password: secret1, voicemail: true,'
        ' forwarding: {busy: {to: "1002"}, no_answer: {voicemail: true, targets: [{to: "0612345678"}]}}}',
    )
    cfg = load_config(write_config(text))
    assert cfg.dids["+33184000001"].did.to.kind == "voicemail"
