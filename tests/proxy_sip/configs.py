"""The YAML the proxy wire tests run on: one French customer whose accounts each carry one routing
rule (busy, no-answer, unreachable, follow-me, permanent, a forwarding loop, caller-number choice,
premium block, call limit), a prepaid (HARD balance) customer, its DIDs (to an account, to a parallel group), and a carrier trunk that
is a test UA on 127.0.0.2 (so its source address tells inbound calls apart from phones on 127.0.0.1).
"""

from __future__ import annotations

from pathlib import Path

DOMAIN = "demo.sipcore.test"
PREPAID_DOMAIN = "pre.sipcore.test"  # a HARD-balance customer: 0.02 EUR at 0.6 EUR/min pays 2 s
TRUNK_HOST = "127.0.0.2"

_RATES = """\
prefix,destination,category,cost_per_minute
+331,France fixed,fixed,0.009
+336,France mobile,mobile,0.02
+338,France premium,premium,0.5
+44,United Kingdom,international,0.01
+33700,Expensive test range,special,0.6
"""

ACCOUNTS = """\
      - {extension: "1001", username: "1001", password: pw1001, display_name: Alice,
         outgoing_number: "+33184000001", block_premium: true, max_calls: 5}
      - {extension: "1002", username: "1002", password: pw1002}
      - {extension: "1003", username: "1003", password: pw1003}
      - {extension: "1004", username: "1004", password: pw1004, forwarding: {busy: {to: "1005"}}}
      - {extension: "1005", username: "1005", password: pw1005}
      - {extension: "1006", username: "1006", password: pw1006,
         forwarding: {no_answer: {delay: 1, targets: [{to: "1005", ring_time: 10}]}}}
      - {extension: "1007", username: "1007", password: pw1007, forwarding: {unreachable: {to: "1005"}}}
      - {extension: "1008", username: "1008", password: pw1008,
         follow_me: {destinations: [{to: "1002", ring_time: 1}, {to: "1003", ring_time: 10}]}}
      - {extension: "1009", username: "1009", password: pw1009, forwarding: {permanent: {to: "1005"}}}
      - {extension: "1010", username: "1010", password: pw1010, forwarding: {permanent: {to: "1011"}}}
      - {extension: "1011", username: "1011", password: pw1011, forwarding: {permanent: {to: "1010"}}}
      - {extension: "1012", username: "1012", password: pw1012, outgoing_number: "+33184000012",
         forwarding: {permanent: {to: "0612345678", show_caller: account}}}
      - {extension: "1013", username: "1013", password: pw1013,
         forwarding: {permanent: {to: "0612345679", show_caller: original}}}
      - {extension: "1014", username: "1014", password: pw1014, max_calls: 1}
"""


def proxy_yaml(
    port: int,
    trunk_port: int,
    state_dir: Path,
    max_call_duration: float = 60,
    location: str = "{backend: memory, state_file: null}",
    trunk_trusted: str = "true",
    media_port: int | None = None,
) -> str:
    """``media_port``: point ``proxy.media_service`` at 127.0.0.1:<port>, where the test plays the
    media service itself (so ``sipcore serve`` is told not to start the real one)."""
    media = f"  media_service: 127.0.0.1:{media_port}\nmedia: {{enabled: false}}\n" if media_port else ""
    return f"""\
default_domain: {DOMAIN}
server:
  listen: {{udp: ["127.0.0.1:{port}"], tcp: ["127.0.0.1:{port}"]}}
  advertised_address: 127.0.0.1:{port}
  local_addresses: [127.0.0.1, localhost]
  metrics: null
  log: {{format: json, level: warning}}
  state_dir: {state_dir}
registrar:
  realm: {DOMAIN}
  nonce_secret: proxy-sip-tests-secret-0123456
  guard: {{failure_threshold: 50, window: 60, ban_time: 60}}
  location: {location}
proxy:
  max_call_duration: {max_call_duration}
  no_answer_timeout: 20
  max_forward_hops: 5
  outbound_trunk: carrier
{media}trunks:
  carrier:
    address: {TRUNK_HOST}:{trunk_port}
    transport: udp
    inbound_sources: [{TRUNK_HOST}]
    trusted: {trunk_trusted}
rating:
  rate_tables: {{t: rates.csv}}
  packages:
    p: {{rate_table: t, markup: {{fixed: 0, percent: 0}}, pulse: 60}}
    per_second: {{rate_table: t, markup: {{fixed: 0, percent: 0}}, pulse: 1}}
customers:
  - id: pre
    name: Prepaid SAS
    reference: CUST-0002
    country: FR
    domains: [{PREPAID_DOMAIN}]
    balance: {{mode: HARD, initial: 0.02}}
    default_package: per_second
    dids:
      - {{number: "+33184000302", to: "3002"}}
    accounts:
      - {{extension: "3001", username: "3001", password: pw3001}}
      - {{extension: "3002", username: "3002", password: pw3002,
         forwarding: {{permanent: {{to: "0612345678", show_caller: account}}}}}}
  - id: demo
    name: Demo SARL
    reference: CUST-0001
    country: FR
    domains: [{DOMAIN}]
    internal: true
    default_package: p
    dids:
      - {{number: "+33184000001", to: "1001"}}
      - {{number: "+33184000091", to: "1001"}}
      - {{number: "+33184000002", to: "group:sales"}}
      - {{number: "+33184000012", to: "1012"}}
      - {{number: "+33184000013", to: "1013"}}
    groups:
      sales: {{strategy: parallel, members: [{{extension: "1002"}}, {{extension: "1003"}}]}}
    accounts:
{ACCOUNTS}"""


def write_config(directory: Path, port: int, trunk_port: int, **kwargs: float | str | int) -> Path:
    """Write ``proxy.yaml`` and its rate file into ``directory``; state goes to ``directory/state``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rates.csv").write_text(_RATES, encoding="utf-8")
    path = directory / "proxy.yaml"
    path.write_text(proxy_yaml(port, trunk_port, directory / "state", **kwargs), encoding="utf-8")
    return path


def password(extension: str) -> str:
    return f"pw{extension}"
