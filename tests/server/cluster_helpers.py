"""Several `sipcore serve` hosts on one machine for the multi-host tests (issue 21): each bound to its
own loopback address (127.0.0.2, .3, .4), all sharing the machine's Redis under one key prefix per test
and one fresh PostgreSQL database per test for the CDRs; the carrier is a test UA or SIPp on
127.0.0.5, the phones on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import yaml

from sipcore.waiting import within
from tests.conftest import free_port
from tests.proxy_sip.configs import proxy_yaml
from tests.server.workers_helpers import ROOT

PG_ROOT = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = ("127.0.0.1", 6379)
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
CARRIER = "127.0.0.5"


def reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new PostgreSQL database (its DSN), dropped afterwards."""
    name = f"sipcore_cluster_{uuid.uuid4().hex[:12]}"
    con = await asyncpg.connect(PG_ROOT, timeout=5)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        con = await asyncpg.connect(PG_ROOT, timeout=5)
        try:
            await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await con.close()


async def cdr_rows(dsn: str) -> list[asyncpg.Record]:
    con = await asyncpg.connect(dsn, timeout=5)
    try:
        exists = await con.fetchval("SELECT to_regclass('public.cdr') IS NOT NULL")
        if not exists:
            return []
        return list(await con.fetch("SELECT call_id, leg, direction, disposition, account_id FROM cdr"))
    finally:
        await con.close()


async def drop_prefix(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@dataclass
class Platform:
    """What every host shares: the Redis prefix, the CDR database, the carrier's port, the hosts."""

    directory: Path
    prefix: str
    dsn: str  # "": no PostgreSQL (each host's CDRs in its own SQLite file)
    carrier_port: int
    ports: dict[str, int]  # host address -> its SIP port (UDP and TCP)
    workers: dict[str, int]
    transport: str = "udp"  # server.cluster.transport: how the hosts send to each other
    metrics_ports: dict[str, int] | None = None  # host address -> its /metrics port
    probe: tuple[int, int] | None = None  # server.cluster.probe_interval, probe_failures (None: defaults)
    guard: str | None = None  # registrar.guard, a YAML mapping (None: the proxy tests' default)

    async def metrics(self, host: str) -> str:
        """The host's /metrics page (every worker's counters merged)."""
        assert self.metrics_ports is not None
        reader, writer = await within(asyncio.open_connection(host, self.metrics_ports[host]), 3)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        data = await within(reader.read(), 5)
        writer.close()
        return data.decode()

    def address(self, host: str) -> tuple[str, int]:
        return (host, self.ports[host])


def new_platform(directory: Path, dsn: str, hosts: tuple[str, ...] = HOSTS,
                 workers: dict[str, int] | None = None, transport: str = "udp") -> Platform:  # fmt: skip
    from tests.proxy_sip.configs import _RATES

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rates.csv").write_text(_RATES)
    prefix = f"sipcore-cluster-{secrets.token_hex(5)}:"
    ports = {h: free_port() for h in hosts}
    return Platform(directory, prefix, dsn, free_port(), ports, {h: (workers or {}).get(h, 1) for h in hosts},
                    transport, {h: free_port() for h in hosts})  # fmt: skip


def host_config(platform: Platform, host: str) -> Path:
    """The proxy wire tests' customers and accounts, with this host's listeners, ``server.cluster``
    naming every other host, Redis location and counters, PostgreSQL CDRs, the carrier on 127.0.0.5."""
    base = platform.directory / host
    base.mkdir(parents=True, exist_ok=True)
    (base / "rates.csv").write_text((platform.directory / "rates.csv").read_text())
    port = platform.ports[host]
    doc = yaml.safe_load(proxy_yaml(port, platform.carrier_port, base / "state"))
    doc["server"] = {
        "listen": {"udp": [f"{host}:{port}"], "tcp": [f"{host}:{port}"]},
        "advertised_address": f"{host}:{port}",
        "local_addresses": [host],
        "metrics": f"{host}:{platform.metrics_ports[host]}" if platform.metrics_ports else None,
        "admin": None,
        "log": {"format": "json", "level": "info"},
        "state_dir": str(base / "state"),
        "drain_timeout": 1,
        "workers": platform.workers[host],
        "cluster": {
            "advertise": f"{host}:{port}",
            "peers": [f"{h}:{p}" for h, p in platform.ports.items()],  # each on its own port: given
            "transport": platform.transport,
        },
    }
    if platform.probe is not None:
        cluster = doc["server"]["cluster"]
        cluster["probe_interval"], cluster["probe_failures"] = platform.probe
    doc["registrar"]["location"] = {"backend": "redis", "url": "redis://127.0.0.1:6379/0",
                                    "key_prefix": platform.prefix}  # fmt: skip
    doc["trunks"]["carrier"] = {"address": f"{CARRIER}:{platform.carrier_port}", "transport": "udp",
                                "inbound_sources": [CARRIER], "trusted": True}  # fmt: skip
    if platform.guard is not None:
        doc["registrar"]["guard"] = yaml.safe_load(platform.guard)
    if platform.dsn:
        doc["cdr"] = {"backend": "postgresql", "dsn": platform.dsn, "spool_dir": str(base / "spool")}
    doc["rating"]["counters"] = {"backend": "redis", "url": "redis://127.0.0.1:6379/0",
                                 "key_prefix": platform.prefix + "rating:"}  # fmt: skip
    path = base / "sipcore.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class Host:
    address: str
    port: int
    proc: asyncio.subprocess.Process
    stderr: bytes = b""

    def kill(self) -> None:
        """kill -9 the host: its master and every worker (the process group), as a machine dying."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM (a 1 s drain), then -9 to the whole group if it is still there, whatever stopped
        the wait (a test's timeout included): no host outlives its test."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            _, self.stderr = await within(self.proc.communicate(), 20)
        finally:
            self.kill()  # the group: workers too, even when the master has exited
            if self.proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await within(self.proc.wait(), 5)


@contextlib.asynccontextmanager
async def run_host(platform: Platform, host: str, tree: Path = ROOT) -> AsyncIterator[Host]:
    """`sipcore serve` from ``tree`` (another checkout: a before/after benchmark) for ``host`` until
    READY=1 (bounded); stopped afterwards if still running."""
    config = host_config(platform, host)
    name = f"sipcore-cluster-{secrets.token_hex(6)}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("\0" + name)
    notify.setblocking(False)
    env = dict(os.environ, PYTHONPATH=str(tree), NOTIFY_SOCKET="@" + name)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--no-media", "--config", str(config),
        cwd=config.parent, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    served = Host(host, platform.ports[host], proc)
    try:
        try:
            state = await within(asyncio.get_running_loop().sock_recv(notify, 64), 30)
        finally:
            notify.close()
        if state != b"READY=1":
            await served.stop()
            raise AssertionError(f"{host}: {state!r}: {served.stderr.decode(errors='replace')[-3000:]}")
        yield served
    finally:
        await served.stop()
