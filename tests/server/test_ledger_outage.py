"""A PostgreSQL ledger outage loses no ledger row and does not stop a host whose Redis counters are
seeded from starting (server.billing's ledger outbox, server.shared_counters' deferred seed).

``sipcore serve`` runs in a subprocess; its ledger DSN points at a TCP proxy this test starts and
stops (the machine's PostgreSQL keeps running for everyone else): "unreachable" is a closed port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from rating.ledger import EntryKind, LedgerEntry
from rating.ledger_store import LedgerAt, PostgresLedgerAt, open_ledger
from sipcore.waiting import within
from tests.conftest import free_port
from tests.pg_ledger import scratch_database
from tests.proxy_sip.configs import TRUNK_HOST, password
from tests.proxy_sip.ua import Ua
from tests.server.admin_helpers import REDIS_URL, api, cli, drop_prefix
from tests.server.lifecycle_helpers import Server, establish, lifecycle_config, serve_process
from tests.server.workers_helpers import ROOT

pytestmark = pytest.mark.timeout(60)

DIALED = "0140000000"  # France fixed through the carrier: 0.009 EUR per started minute (pulse 60)
PRICE = 9000  # micro-units of a call of 1 to 60 s


@pytest.fixture(scope="module")
def outage_dsn() -> Iterator[str]:
    """A database of this module's own (sipcore_ledger_outage_<random>), dropped at its end."""
    with scratch_database("sipcore_ledger_outage") as dsn:
        yield dsn


class PgProxy:
    """A TCP proxy to 127.0.0.1:5432 on a port of its own: `stop()` closes the port and cuts every
    connection through it (PostgreSQL unreachable for whoever uses the port), `start()` opens it again."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@contextlib.asynccontextmanager
async def pg_proxy() -> AsyncIterator[PgProxy]:
    proxy = PgProxy()
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def host_config(
    directory: Path, trunk_port: int, dsn: str, schema: str, proxy: PgProxy | None, prefix: str = ""
) -> Path:
    """The lifecycle YAML with the demo customer billed (not internal), an admin API, the PostgreSQL
    ledger reached through ``proxy`` (None: the default SQLite ledger), and (``prefix``) Redis
    counters refreshed every 0.3 s."""
    path = lifecycle_config(directory, trunk_port, billed_max_calls=100)
    text = path.read_text()
    text = text.replace(
        "  metrics: null\n", f"  metrics: null\n  admin: {{listen: 127.0.0.1:{free_port()}}}\n", 1
    )
    rating = "rating:\n"
    if proxy is not None:
        proxied = dsn.replace(":5432/", f":{proxy.port}/", 1)
        assert proxied != dsn
        rating += f"  ledger: {{backend: postgresql, dsn: '{proxied}?schema={schema}'}}\n"
    if prefix:
        text = text.replace("level: warning", "level: info", 1)  # ledger_reachable is an info line
        rating += f"  counters: {{backend: redis, url: '{REDIS_URL}', key_prefix: '{prefix}', refresh_interval: 0.3}}\n"
    text = text.replace("rating:\n", rating, 1)
    path.write_text(text)
    return path


def admin_port(config: Path) -> int:
    return int(config.read_text().split("admin: {listen: 127.0.0.1:", 1)[1].split("}", 1)[0])


async def place_calls(server: Server, trunk: Ua, count: int) -> list[str]:
    """``count`` answered calls of 1 s each from 1002 (customer demo), ended by the caller."""
    caller = await Ua.open("1002", password("1002"), server.address)
    try:
        ids = [f"outage-{secrets.token_hex(4)}-{i}" for i in range(count)]
        dialogs = [await establish(caller, DIALED, call_id, trunk) for call_id in ids]
        await asyncio.sleep(1.1)
        for dlg in dialogs:
            caller.in_dialog(dlg, "BYE")
            ok = await caller.response(dlg.call_id, "BYE", timeout=5)
            assert ok.status == 200, ok.start_line()
        return ids
    finally:
        caller.close()


def append(at: LedgerAt, entry: LedgerEntry) -> None:
    with open_ledger(at) as ledger:
        ledger.append(entry)


def call_rows(at: LedgerAt) -> list[LedgerEntry]:
    with open_ledger(at) as ledger:
        return [e for e in ledger.entries("demo") if e.kind is EntryKind.CALL]


async def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await asyncio.to_thread(check):  # type: ignore[arg-type]
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)


async def shown_balance(config: Path) -> Decimal:
    rc, out, err = await cli("balance", "show", "--customer", "demo", "--json", "--config", str(config))
    assert rc == 0, err
    return Decimal(json.loads(out)["balance"])


@pytest.mark.parametrize("stop", ["sigterm", "kill-9"])
async def test_call_debits_settled_while_the_ledger_is_down_reach_it_once(
    tmp_path: Path, outage_dsn: str, stop: str
) -> None:
    """Memory counters: calls settled while PostgreSQL is unreachable, the server then stopped by
    SIGTERM (its drain cannot write them) or SIGKILL; restarted with PostgreSQL back, every call has
    its ledger row exactly once, and the ledger's balance is the counters' balance."""
    schema = f"outage_{secrets.token_hex(5)}"
    direct = PostgresLedgerAt(outage_dsn, schema)
    trunk = await Ua.open("carrier", "", ("127.0.0.1", free_port()), host=TRUNK_HOST)
    try:
        async with pg_proxy() as proxy:
            config = host_config(tmp_path, trunk.port, outage_dsn, schema, proxy)
            async with serve_process(config) as server:
                await proxy.stop()  # PostgreSQL unreachable from here on
                ids = await place_calls(server, trunk, 3)
                await asyncio.sleep(1.5)  # settled, CDRs durable, a flush or two refused
                stopped = 0
                if stop == "sigterm":
                    server.terminate()
                    stopped = await server.wait(30)
                else:
                    os.kill(server.proc.pid, signal.SIGKILL)
                    await server.wait(10)
                first = server
            assert not await asyncio.to_thread(call_rows, direct)  # nothing reached it during the outage
            await proxy.start()
            for _ in range(2):  # the second start finds nothing left to write (nor writes it twice)
                async with serve_process(config) as server:
                    status, answer = await api(admin_port(config), "GET", "/balances/demo")
                    assert status == 200, answer
                    server.terminate()
                    assert await server.wait(30) == 0, server.stderr.decode(errors="replace")[-3000:]
                rows = await asyncio.to_thread(call_rows, direct)
                assert sorted(e.memo for e in rows) == sorted(ids)  # each call once
                assert {e.call_key for e in rows} == {f"cdr:{i}:0" for i in ids}
                assert all(e.amount_micros == -PRICE for e in rows)
                assert (
                    Decimal(answer["balance"])
                    == Decimal(answer["ledger_balance"])
                    == Decimal(-3 * PRICE) / 10**6
                )
                assert await shown_balance(config) == Decimal(-3 * PRICE) / 10**6
            # the run cut off from the ledger: one line at the outage's start; a drain that ends well
            assert len(first.log_events("ledger_unreachable")) == 1
            if stop == "sigterm":
                assert stopped == 0, first.stderr.decode(errors="replace")[-3000:]
                assert first.log_events("ledger_debits_kept")
    finally:
        trunk.close()


async def test_the_sqlite_ledger_gets_the_same_guarantee(tmp_path: Path) -> None:
    """The default SQLite ledger takes the same path: calls settled while the ledger file is locked
    by another writer (the batch waits, then fails), the server killed (-9) meanwhile; restarted,
    each call's row is in the ledger once."""
    trunk = await Ua.open("carrier", "", ("127.0.0.1", free_port()), host=TRUNK_HOST)
    try:
        config = host_config(tmp_path, trunk.port, "", "", None)
        path = tmp_path / "state" / "ledger.sqlite3"
        async with serve_process(config) as server:
            blocker = sqlite3.connect(str(path), isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")  # every other writer waits (then gives up)
            try:
                ids = await place_calls(server, trunk, 3)
                await asyncio.sleep(1.5)  # settled, in the outbox, the batch waiting on the lock
                os.kill(server.proc.pid, signal.SIGKILL)
                await server.wait(10)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
        assert not call_rows(path)  # the kill came before any batch
        async with serve_process(config) as server:
            status, answer = await api(admin_port(config), "GET", "/balances/demo")
            assert status == 200, answer
            server.terminate()
            assert await server.wait(30) == 0, server.stderr.decode(errors="replace")[-3000:]
        rows = call_rows(path)
        assert sorted(e.memo for e in rows) == sorted(ids)
        assert Decimal(answer["balance"]) == Decimal(answer["ledger_balance"]) == Decimal(-3 * PRICE) / 10**6
    finally:
        trunk.close()


async def test_a_host_starts_with_the_ledger_down_serves_and_folds_it_later(
    tmp_path: Path, outage_dsn: str
) -> None:
    """Redis counters already seeded: a host started while the ledger is unreachable serves calls
    (debited in Redis, their ledger rows kept locally); a payment written meanwhile by another host
    is folded into Redis, and the rows written, once PostgreSQL is back; one log line each way."""
    import redis.asyncio as aioredis

    schema = f"outage_{secrets.token_hex(5)}"
    direct = PostgresLedgerAt(outage_dsn, schema)
    prefix = f"sipcore-test-ledger-outage-{secrets.token_hex(4)}:"
    client = aioredis.Redis.from_url(REDIS_URL)
    trunk = await Ua.open("carrier", "", ("127.0.0.1", free_port()), host=TRUNK_HOST)
    try:
        async with pg_proxy() as proxy:
            config = host_config(tmp_path, trunk.port, outage_dsn, schema, proxy, prefix)
            async with serve_process(config) as server:  # seeds Redis from the ledger
                server.terminate()
                assert await server.wait(30) == 0
            await proxy.stop()
            async with serve_process(config) as server:  # today's code: no READY, the start fails
                ids = await place_calls(server, trunk, 2)
                await asyncio.sleep(0.5)
                assert int(await client.get(f"{prefix}bal:demo") or 0) == -2 * PRICE
                status, answer = await api(admin_port(config), "GET", "/balances/demo")
                assert status == 200, answer  # the live balance answers; the book's is unknown meanwhile
                assert (Decimal(answer["balance"]), answer["ledger_balance"]) == (
                    Decimal(-2 * PRICE) / 10**6,
                    None,
                )
                payment = LedgerEntry(
                    "demo", EntryKind.PAYMENT, 1_000_000, datetime.now(UTC), "by another host"
                )
                await asyncio.to_thread(append, direct, payment)  # the direct port: another host
                assert await asyncio.to_thread(call_rows, direct) == []
                await proxy.start()

                def folded() -> bool:
                    return len(call_rows(direct)) == 2

                await wait_for(folded, 5, "the call rows written")
                deadline = time.monotonic() + 5
                while int(await client.get(f"{prefix}bal:demo") or 0) != 1_000_000 - 2 * PRICE:
                    assert time.monotonic() < deadline, await client.get(f"{prefix}bal:demo")
                    await asyncio.sleep(0.1)
                status, answer = await api(admin_port(config), "GET", "/balances/demo")
                assert status == 200, answer
                expected = Decimal(1_000_000 - 2 * PRICE) / 10**6
                assert Decimal(answer["balance"]) == Decimal(answer["ledger_balance"]) == expected
                server.terminate()
                assert await server.wait(30) == 0, server.stderr.decode(errors="replace")[-3000:]
            assert len(server.log_events("ledger_unreachable")) == 1
            assert len(server.log_events("ledger_reachable")) == 1
            rows = await asyncio.to_thread(call_rows, direct)
            assert sorted(e.memo for e in rows) == sorted(ids)
            assert await shown_balance(config) == Decimal(1_000_000 - 2 * PRICE) / 10**6
    finally:
        trunk.close()
        await client.aclose()
        await drop_prefix(prefix)


async def test_memory_counters_do_not_start_without_the_ledger(tmp_path: Path, outage_dsn: str) -> None:
    """Memory counters read every balance from the ledger at start: with it unreachable the host
    refuses to start (the documented choice), naming the ledger."""
    schema = f"outage_{secrets.token_hex(5)}"
    proxy = PgProxy()  # never started: its port is closed
    config = host_config(tmp_path, free_port(), outage_dsn, schema, proxy)
    addr = f"127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--no-media", "--config", str(config), "--udp", addr,
        "--tcp", addr, "--metrics", "off", "--log-format", "json", cwd=config.parent,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await within(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode != 0
    assert b"ledger_unreachable_at_start" in err and f":{proxy.port}/".encode() in err, err[-3000:]


def test_a_replayed_batch_of_call_debits_is_stored_once(tmp_path: Path, outage_dsn: str) -> None:
    """`append_all` skips a call debit whose ``call_key`` the ledger holds (a batch written again after
    a crash between the ledger's commit and the outbox's clean-up), on both backends; entries without
    a key (the offline CLI's) are never skipped."""
    at0 = datetime(2026, 12, 1, tzinfo=UTC)

    def debit(key: str | None, amount: int = 5) -> LedgerEntry:
        return LedgerEntry("c", EntryKind.CALL, -amount, at0, key or "cli", call_key=key)

    for at in (tmp_path / "ledger.sqlite3", PostgresLedgerAt(outage_dsn, f"outage_{secrets.token_hex(5)}")):
        with open_ledger(at) as ledger:
            first = ledger.append_all([debit("cdr:a:0"), debit("cdr:b:0"), debit(None)])
            assert [e.call_key for e in first] == ["cdr:a:0", "cdr:b:0", None]
            again = ledger.append_all([debit("cdr:a:0"), debit(None, 7), debit("cdr:c:0"), debit("cdr:c:0")])
            assert [(e.call_key, e.amount_micros) for e in again] == [(None, -7), ("cdr:c:0", -5)]
            stored = ledger.entries("c")
            assert [(e.id, e.call_key) for e in stored] == [(e.id, e.call_key) for e in first + again]
            assert ledger.balance_micros("c") == -27
            assert ledger.totals(0).live == ()  # call rows are no live entries: the seed never folds them


def _on_database(dsn: str, sql: str) -> None:
    """Run SQL on the test's database (from a test without a running loop)."""
    import asyncpg

    async def go() -> None:
        con = await asyncpg.connect(dsn, timeout=5)
        try:
            await con.execute(sql)
        finally:
            await con.close()

    asyncio.run(go())


def test_ledgers_from_before_call_keys_are_upgraded_on_open(tmp_path: Path, outage_dsn: str) -> None:
    """A ledger written before `call_key` (SQLite file, PostgreSQL schema) gets the column and its
    unique index when opened; its rows read with no key, new call rows are deduplicated."""
    at0 = datetime(2026, 12, 1, tzinfo=UTC)
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL, kind TEXT NOT NULL,"
        " amount_micros INTEGER NOT NULL, at TEXT NOT NULL, memo TEXT NOT NULL DEFAULT '', operation_id TEXT);"
        f"INSERT INTO ledger (customer_id, kind, amount_micros, at) VALUES ('c', 'call', -3, '{at0.isoformat()}');"
    )
    db.commit()
    db.close()
    schema = f"outage_{secrets.token_hex(5)}"
    old_ddl = (
        f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.ledger (id bigint GENERATED BY DEFAULT AS IDENTITY"
        " PRIMARY KEY, customer_id text NOT NULL, kind text NOT NULL, amount_micros bigint NOT NULL,"
        " at timestamptz NOT NULL, memo text NOT NULL DEFAULT '', operation_id text UNIQUE);"
        f" CREATE TABLE {schema}.billing_runs (period text PRIMARY KEY, at timestamptz NOT NULL);"
        f" INSERT INTO {schema}.ledger (customer_id, kind, amount_micros, at) VALUES ('c', 'call', -3, now())"
    )
    _on_database(outage_dsn, old_ddl)
    for at in (path, PostgresLedgerAt(outage_dsn, schema)):
        with open_ledger(at) as ledger:
            assert [e.call_key for e in ledger.entries("c")] == [None]
            debit = LedgerEntry("c", EntryKind.CALL, -5, at0, "x", call_key="cdr:x:0")
            assert len(ledger.append_all([debit])) == 1
            assert ledger.append_all([debit]) == []
            assert ledger.balance_micros("c") == -8
