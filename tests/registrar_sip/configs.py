"""YAML configurations for the registrar wire tests: free loopback ports, a private state dir, the demo
accounts 1001/1002/1003 plus optional SIPp accounts, and a chosen location backend."""

from __future__ import annotations

from pathlib import Path

DOMAIN = "demo.sipcore.test"
PASSWORDS = {"1001": "demo1001pw", "1002": "demo1002pw", "1003": "demo1003pw"}
MIN_EXPIRES, MAX_EXPIRES, DEFAULT_EXPIRES = 60, 3600, 600
MAX_CONTACTS = 5

_RATES = "prefix,destination,category,cost_per_minute\n+331,France fixed,fixed,0.009\n"


def registrar_yaml(
    port: int,
    state_dir: Path,
    *,
    metrics_port: int | None = None,
    location: str = "{backend: memory, state_file: location.msgpack}",
    guard: str = "{failure_threshold: 10, window: 60, ban_time: 600}",
    sipp_users: int = 0,
    jitter_percent: int = 0,
    digest_algorithms: str = "[MD5, SHA-256]",
) -> str:
    """The whole configuration; ``sipp_users`` adds u10000… with password pw+username (bench users.csv)."""
    metrics = f"127.0.0.1:{metrics_port}" if metrics_port else "null"
    accounts = [
        f'      - {{extension: "{u}", username: "{u}", password: {pw}}}' for u, pw in PASSWORDS.items()
    ]
    accounts += [
        f'      - {{extension: "{n}", username: u{n}, password: pwu{n}}}'
        for n in range(10000, 10000 + sipp_users)
    ]
    return (
        f"""\
default_domain: {DOMAIN}
server:
  listen: {{udp: ["127.0.0.1:{port}"], tcp: ["127.0.0.1:{port}"]}}
  advertised_address: 127.0.0.1:{port}
  local_addresses: [127.0.0.1, localhost]
  metrics: {metrics}
  log: {{format: json, level: info}}
  state_dir: {state_dir}
registrar:
  realm: {DOMAIN}
  nonce_secret: registrar-sip-tests-secret-0123
  expires: {{min: {MIN_EXPIRES}, max: {MAX_EXPIRES}, default: {DEFAULT_EXPIRES}}}
  max_contacts: {MAX_CONTACTS}
  max_contacts_policy: reject
  expires_jitter_percent: {jitter_percent}
  digest_algorithms: {digest_algorithms}
  location: {location}
  guard: {guard}
rating:
  rate_tables: {{t: rates.csv}}
  packages:
    p: {{rate_table: t, markup: {{fixed: 0, percent: 0}}, pulse: 60}}
customers:
  - id: demo
    name: Demo SARL
    reference: CUST-0001
    country: FR
    domains: [{DOMAIN}]
    internal: true
    default_package: p
    accounts:
"""
        + "\n".join(accounts)
        + "\n"
    )


def write_config(directory: Path, port: int, **kwargs: object) -> Path:
    """Write ``registrar.yaml`` and its rate file into ``directory``; state goes to ``directory/state``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rates.csv").write_text(_RATES, encoding="utf-8")
    path = directory / "registrar.yaml"
    path.write_text(registrar_yaml(port, directory / "state", **kwargs), encoding="utf-8")  # type: ignore[arg-type]
    return path
