"""`sipcore serve --workers 2` with the Redis location store: both workers serve the one SIP port
(the master binds it, the workers inherit it); SIGTERM stops them all. The memory store with workers
(replicated) and calls across workers are in test_workers_calls.py."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path

import pytest

from config.loader import default_config_path
from sipcore.waiting import within
from tests.conftest import free_port
from tests.server.wire import options, udp_client

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_two_workers_share_the_port(tmp_path: Path) -> None:
    prefix = f"wk{secrets.token_hex(4)}:"
    text = default_config_path().read_text()
    text = text.replace(
        "location: {backend: memory, state_file: location.msgpack}",
        f'location: {{backend: redis, url: "redis://127.0.0.1:6379/0", key_prefix: "{prefix}"}}',
    ).replace("rates/example.csv", str(default_config_path().parent / "rates" / "example.csv"))
    config = tmp_path / "workers.yaml"
    config.write_text(text)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--no-media", "--config", str(config), "--workers", "2",
        "--udp", f"127.0.0.1:{port}", "--tcp", f"127.0.0.1:{port}", "--metrics", "off",
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        client = await udp_client()
        answered = 0
        try:
            for _ in range(40):  # until both workers are up, bounded
                client.send(options("127.0.0.1", port, client.port), ("127.0.0.1", port))
                data = await client.recv(0.5)
                if data is not None and data.startswith(b"SIP/2.0 200"):
                    answered += 1
                    if answered >= 5 and len(_children(proc.pid)) == 2:
                        break
        finally:
            client.close()
        assert answered >= 5
        assert len(_children(proc.pid)) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await within(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-1500:]
