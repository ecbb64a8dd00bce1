"""Fixtures: a minimal valid configuration written to a temporary directory, with its rate file."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

RATES_CSV = """\
prefix,destination,category,cost_per_minute
+331,France fixed,fixed,0.009
+336,France mobile,mobile,0.02
+338,France premium,premium,0.5
+44,United Kingdom,international,0.015
"""

BASE = """\
default_domain: acme.test
registrar:
  nonce_secret: test-secret-0123456789
trunks:
  carrier: {address: "127.0.0.1:5090"}
rating:
  rate_tables: {carrier: rates/test.csv}
  packages:
    pro:
      rate_table: carrier
      markup: {fixed: 0.0025, percent: 20}
      included_categories: [fixed]
customers:
  - id: acme
    name: ACME
    reference: REF-1
    country: FR
    domains: [acme.test]
    default_package: pro
    dids:
      - {number: "+33184000001", to: "1001"}
    accounts:
      - {extension: "1001", username: alice, password: secret1}
      - {extension: "1002", username: bob, password: secret2}
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write YAML (dedented) as tmp/config.yaml next to tmp/rates/test.csv and return its path."""
    rates = tmp_path / "rates"
    rates.mkdir()
    (rates / "test.csv").write_text(RATES_CSV, encoding="utf-8")

    def write(text: str = BASE, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write
