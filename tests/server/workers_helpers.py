"""`sipcore serve --workers N` as a subprocess for the workers tests: started when the master reports
READY=1 (every worker up), stopped with SIGTERM; plus owner-aware Call-IDs and a /metrics scrape."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sipcore.ownership import owner_of_call_id
from sipcore.waiting import within
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def owned_by(worker: int, workers: int, prefix: str = "") -> str:
    """A fresh Call-ID whose owner is ``worker`` (sipcore.ownership)."""
    while True:
        key = prefix + secrets.token_hex(6)
        if owner_of_call_id(key, workers) == worker:
            return key


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    port: int
    metrics_port: int
    stderr: bytes = b""

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def metrics(self) -> str:
        reader, writer = await within(asyncio.open_connection("127.0.0.1", self.metrics_port), 3)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        data = await within(reader.read(), 5)
        writer.close()
        return data.decode()

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        _, self.stderr = await within(self.proc.communicate(), 20)
        assert self.proc.returncode is not None
        return self.proc.returncode


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@contextlib.asynccontextmanager
async def serve(config: Path, workers: int = 2, port: int | None = None) -> AsyncIterator[Served]:
    """Run the server until READY=1 (bounded); SIGTERM it afterwards if the test did not."""
    port = port or free_port()
    metrics_port = free_port()
    name = f"sipcore-test-{secrets.token_hex(6)}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("\0" + name)
    notify.setblocking(False)
    addr = f"127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET="@" + name)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--no-media", "--config", str(config), "--workers", str(workers),
        "--udp", addr, "--tcp", addr, "--metrics", f"127.0.0.1:{metrics_port}",
        cwd=config.parent, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    served = Served(proc, port, metrics_port)
    try:
        loop = asyncio.get_running_loop()
        try:
            state = await within(loop.sock_recv(notify, 64), 30)
        finally:
            notify.close()
        if state != b"READY=1":  # say why the server gave up (its log), not just that it did
            await served.stop()
            raise AssertionError(f"{state!r}: {served.stderr.decode(errors='replace')[-3000:]}")
        assert len(children_of(proc.pid)) == (workers if workers > 1 else 0)  # 1: the process itself
        yield served
    finally:
        if proc.returncode is None:
            await served.stop()
