"""Fixtures: the registrar on free loopback ports — in-process (`Application`), in-process with a guard
that does not whitelist loopback, or as a `sipcore serve` subprocess — plus a private Redis prefix."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from registrar.location import Binding
from server.app import Application, load_application_config
from server.registrar_service import RegistrarService
from sipcore.waiting import within
from tests.conftest import free_port
from tests.registrar_sip.client import Address, Phone, SipClient
from tests.registrar_sip.configs import PASSWORDS, write_config

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Running:
    """A started registrar: where it listens and its parts (for looking into the location store)."""

    port: int
    service: RegistrarService
    metrics: Address | None = None

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.port)

    async def phone(
        self, user: str = "1001", transport: str = "UDP", source: str = "127.0.0.1", **kwargs: str
    ) -> Phone:
        client = await SipClient.open(self.address, transport, source)
        return Phone(client, user, PASSWORDS.get(user, f"pw{user}"), **kwargs)

    async def bindings(self, aor: str = "sip:1001@demo.sipcore.test") -> list[Binding]:
        """The AOR's live bindings as the location store holds them (memory or Redis)."""
        return list(await self.service.store.get(aor, time.time()))


@contextlib.asynccontextmanager
async def app_running(directory: Path, **config: object) -> AsyncIterator[Running]:
    """The whole `Application` from a generated YAML, as `sipcore serve` builds it."""
    port = free_port()
    loaded = load_application_config(str(write_config(directory, port, **config)))
    app = Application(loaded)
    await app.start()
    try:
        yield Running(port, app.registrar, app.metrics_address)
    finally:
        await app.close()


@pytest.fixture
async def registrar(tmp_path: Path) -> AsyncIterator[Running]:
    async with app_running(tmp_path) as running:
        yield running


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Running]:
    """Registrar whose guard bans loopback sources after 3 failures (empty whitelist), with /metrics."""
    guard = "{failure_threshold: 3, window: 60, ban_time: 600, whitelist: []}"
    async with app_running(tmp_path, guard=guard, metrics_port=free_port()) as running:
        yield running


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def redis_namespace() -> AsyncIterator[str]:
    """A key prefix private to one test; every key under it is deleted afterwards. Skips without Redis."""
    if not _redis_reachable():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    import redis.asyncio as aioredis

    prefix = f"sipcore-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        client = aioredis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    async with redis_namespace() as prefix:
        yield prefix


@contextlib.asynccontextmanager
async def serve_process(config: Path, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """`sipcore serve` as a child process; ready once it sent READY=1; stopped with SIGTERM (bounded)."""
    directory = config.parent
    notify_path = str(directory / f"notify-{uuid.uuid4().hex[:6]}.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.setblocking(False)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, PYTHONPATH=str(ROOT))
    log = open(directory / f"serve-{port}.log", "ab")  # noqa: SIM115 - closed below
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--no-media", "--config", str(config), "--log-format", "json",
        cwd=str(directory), env=env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        ready = await within(asyncio.get_running_loop().sock_recv(notify, 64), 20)
        assert ready == b"READY=1", ready
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await within(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        notify.close()
        log.close()
