"""Billing instances that share counters in Redis, as separate server processes would: each has its
own cache, Redis client, CDR spool and pending-operations file; they share the state directory (the
ledger, the CDR database) and a key prefix unique to the test."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from calls.call_ended import CallEnded
from cdr import open_store
from cdr.record import CdrRecord
from config.loader import load_config_text
from rating.ledger import EntryKind, LedgerEntry
from rating.ledger_sqlite import SqliteLedger
from routing import AuthoriseRequest
from server.billing import Billing, build_billing

REDIS_URL = "redis://127.0.0.1:6379/0"
MOBILE = "+33612345678"  # 0.50 EUR/min at pulse 60: a 60 s call costs 500_000 micros
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def config_yaml(
    state_dir: Path,
    prefix: str,
    url: str = REDIS_URL,
    initial: str = "1.00",
    backend: str = "redis",
    refresh: float = 60,
    workers: int = 1,
    outage_reserve: str | None = None,
) -> str:
    reserve = f", outage_reserve: {outage_reserve}" if outage_reserve is not None else ""
    counters = (
        f"{{backend: redis, url: '{url}', key_prefix: '{prefix}', refresh_interval: {refresh}{reserve}}}"
    )
    if backend == "memory":
        counters = "{backend: memory}"
    return f"""\
default_domain: pre.test
server: {{state_dir: '{state_dir}', metrics: null, workers: {workers}}}
registrar: {{nonce_secret: counters-shared-tests-0123456}}
rating:
  rate_tables: {{t: rates.csv}}
  packages:
    plain: {{rate_table: t, pulse: 60}}
    bundle: {{rate_table: t, pulse: 60, free_minutes: 5}}
  counters: {counters}
customers:
  - id: pre
    name: Prepaid SARL
    reference: P-1
    country: FR
    domains: [pre.test]
    balance: {{mode: HARD, initial: {initial}}}
    default_package: plain
    accounts:
      - {{extension: "100", username: "100", password: pw100}}
      - {{extension: "101", username: "101", password: pw101, package: bundle}}
  - id: soft
    name: Soft SARL
    reference: S-1
    country: FR
    domains: [soft.test]
    balance: {{mode: SOFT, initial: 0}}
    default_package: plain
    accounts:
      - {{extension: "200", username: "200", password: pw200}}
  - id: cap
    name: Capped SARL
    reference: C-1
    country: FR
    domains: [cap.test]
    balance: {{mode: SOFT, initial: 0, daily_cap: 1.00}}
    default_package: plain
    accounts:
      - {{extension: "300", username: "300", password: pw300}}
"""


def write_rates(base: Path) -> None:
    (base / "rates.csv").write_text(
        "prefix,destination,category,cost_per_minute\n+336,France mobile,mobile,0.5\n"
    )


def make_billing(base: Path, prefix: str, worker: int, **yaml: Any) -> Billing:
    """One "process": its own worker index (CDR spool, pending file), cache and Redis client."""
    write_rates(base)
    cfg = load_config_text(config_yaml(base / "var", prefix, **yaml), base)
    billing = build_billing(cfg, worker)
    billing.clock = lambda: T0  # authorisation prices at T0, whatever today's date
    if billing.shared is not None:
        billing.shared.clock = lambda: T0  # the refresh reads T0's day and cycle
    return billing


def ended(call_id: str, account: str, seconds: int, start: datetime = T0) -> CallEnded:
    customer = account.split("/")[0]
    begin = start.timestamp()
    return CallEnded(
        call_id=call_id, leg="0", direction="outbound", customer_id=customer, account_id=account,
        billed_account_id=account, caller=account, dialed=MOBILE, normalised=MOBILE,
        callee_account_id=None, did=None, start=begin, answer=begin, end=begin + seconds,
        disposition="answered", sip_status=200, hangup_by="caller", rated=True,
    )  # fmt: skip


async def settle(billing: Billing, *events: CallEnded) -> None:
    """Settle calls as the proxy's call-ended sink does, and wait for them."""
    for event in events:
        billing.on_call_ended(event)
    await asyncio.gather(*list(billing._tasks))


def authorise(billing: Billing, account: str = "pre/100") -> Any:
    return billing.authorise(AuthoriseRequest(account.split("/")[0], account, MOBILE))


async def cached_balance(billing: Billing, customer: str = "pre") -> int:
    return await billing.counters.balance(customer)


async def redis_balance(client: aioredis.Redis, prefix: str, customer: str = "pre") -> int | None:
    value = await client.get(f"{prefix}bal:{customer}")
    return int(value) if value is not None else None


def ledger_calls(base: Path, customer: str = "pre") -> list[LedgerEntry]:
    with SqliteLedger(base / "var" / "ledger.sqlite3") as ledger:
        return [e for e in ledger.entries(customer) if e.kind is EntryKind.CALL]


def post(base: Path, kind: EntryKind, micros: int, customer: str = "pre") -> None:
    """What `sipcore balance add-payment|add-charge` writes."""
    with SqliteLedger(base / "var" / "ledger.sqlite3") as ledger:
        ledger.append(LedgerEntry(customer, kind, micros, T0, "test"))


async def cdrs(base: Path) -> list[CdrRecord]:
    store = open_store(f"sqlite:{base / 'var' / 'cdr.sqlite3'}")
    await store.open()
    try:
        return await store.calls(T0 - timedelta(days=1), T0 + timedelta(days=1))
    finally:
        await store.close()


def unique_prefix() -> str:
    return f"test:counters:{uuid.uuid4().hex}:"


async def drop_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)


# -- a Redis of the test's own, to stop and start --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_listening(port: int) -> None:
    for _ in range(250):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"redis-server did not listen on {port}")


class PrivateRedis:
    """redis-server on a free port; `persistent` keeps its data across a kill (AOF, fsync always)."""

    def __init__(self, directory: Path, persistent: bool = True) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary, self.directory, self.persistent = binary, directory, persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        aof = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        )
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *aof]
        self.proc = subprocess.Popen([*args, "--dir", str(self.directory)], stdout=subprocess.DEVNULL)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
