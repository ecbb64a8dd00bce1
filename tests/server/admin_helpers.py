"""The admin API tests' helpers: the proxy wire tests' configuration with an admin listener (and, when
asked, a token file and Redis counters), an in-process server on it, and a tiny HTTP/JSON client over
a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from server.app import Application, load_application_config
from sipcore.waiting import within
from tests.conftest import free_port
from tests.proxy_sip.configs import TRUNK_HOST, write_config
from tests.proxy_sip.conftest import Platform
from tests.proxy_sip.ua import Ua
from tests.server.workers_helpers import ROOT

REDIS_URL = "redis://127.0.0.1:6379/0"


def admin_config(
    directory: Path,
    port: int,
    trunk_port: int,
    admin_port: int,
    token: str | None = None,
    counters: str = "memory",
    workers: int = 1,
    prefix: str | None = None,
    **kwargs: Any,
) -> Path:
    """tests/proxy_sip/configs.py's YAML, plus ``server.admin`` (and its token file), the workers and
    the counters backend (``redis``: a key prefix unique to the test)."""
    path = write_config(directory, port, trunk_port, **kwargs)
    text = path.read_text(encoding="utf-8")
    admin = f"  admin: {{listen: 127.0.0.1:{admin_port}"
    if token is not None:
        (directory / "admin.token").write_text(token + "\n", encoding="utf-8")
        admin += ", token_file: admin.token"
    admin += "}\n"
    if workers > 1:
        admin += f"  workers: {workers}\n"
    text = text.replace("  metrics: null\n", "  metrics: null\n" + admin, 1)
    if counters == "redis":
        prefix = prefix or f"sipcore-test-admin-{secrets.token_hex(4)}:"
        text = text.replace(
            "rating:\n",
            f"rating:\n  counters: {{backend: redis, url: '{REDIS_URL}', key_prefix: '{prefix}'}}\n",
            1,
        )
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def admin_platform(
    directory: Path, keep_config: bool = False, **config: Any
) -> AsyncIterator[Platform]:
    """An in-process Application with its admin API on a free port (``platform.app.admin_address``);
    ``keep_config``: run on the configuration already written in ``directory`` (a restart)."""
    port = free_port()
    trunk = await Ua.open("carrier", "", ("127.0.0.1", port), host=TRUNK_HOST)
    path = directory / "proxy.yaml"
    if keep_config:
        text = path.read_text(encoding="utf-8")
        old_port = text.split("advertised_address: 127.0.0.1:", 1)[1].split()[0]
        trunk_line = text.split(f"address: {TRUNK_HOST}:", 1)[1].split()[0]
        text = text.replace(old_port, str(port)).replace(
            f"{TRUNK_HOST}:{trunk_line}", f"{TRUNK_HOST}:{trunk.port}"
        )
        path.write_text(text, encoding="utf-8")
    else:
        path = admin_config(directory, port, trunk.port, free_port(), **config)
    app = Application(load_application_config(str(path)))
    await app.start()
    assert app.admin_address is not None
    running = Platform(app, port, trunk)
    app.proxy.call_ended_sinks.append(running.ended.append)
    try:
        yield running
    finally:
        for ua in running.uas:
            ua.close()
        trunk.close()
        await app.close()


async def drop_prefix(prefix: str) -> None:
    """Delete a test's Redis keys."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def api(
    port: int, method: str, path: str, body: Any = None, token: str | None = None, raw: bytes | None = None
) -> tuple[int, Any]:
    """One request over a real socket: (status, JSON answer)."""
    reader, writer = await within(asyncio.open_connection("127.0.0.1", port), 3)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    head = f"{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: {len(data)}\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    writer.write((head + "\r\n").encode() + data)
    answer = await within(reader.read(), 10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload, parse_float=Decimal) if payload else None


async def cli(*args: str) -> tuple[int, str, str]:
    """``sipcore ARGS`` as a subprocess: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await within(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
