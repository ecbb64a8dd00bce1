"""`sipcore serve` as a subprocess (one process or N workers) for the reload and drain tests: the
notify socket kept open (READY=1, then STOPPING=1), `sipcore reload` run as the operator would, calls
set up on chosen Call-IDs, and the SQLite CDRs read after the server has exited."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from sipcore.digest import build_authorization
from sipcore.waiting import within
from tests.conftest import free_port
from tests.proxy_sip.configs import DOMAIN, write_config
from tests.proxy_sip.ua import Dialog, Ua
from tests.server.workers_helpers import ROOT, children_of


def lifecycle_config(
    directory: Path, trunk_port: int, drain_timeout: float = 2, billed_max_calls: int | None = None
) -> Path:
    """The proxy wire tests' YAML (one French customer, a prepaid one, a trunk on 127.0.0.2), SQLite
    CDRs under ``directory/state``, log level warning, and ``server.drain_timeout``;
    ``billed_max_calls``: the demo customer billed (not internal) and 1002 allowed that many calls."""
    path = write_config(directory, free_port(), trunk_port)
    text = path.read_text()
    text = text.replace("  state_dir:", f"  drain_timeout: {drain_timeout}\n  state_dir:", 1)
    if billed_max_calls is not None:
        text = text.replace("    internal: true\n", "    internal: false\n", 1)
        text = text.replace("password: pw1002}", f"password: pw1002, max_calls: {billed_max_calls}}}", 1)
    path.write_text(text)
    return path


@dataclass
class Server:
    proc: asyncio.subprocess.Process
    config: Path
    port: int
    workers: int
    notify: socket.socket
    notified: list[bytes] = field(default_factory=list)
    stderr: bytes = b""

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def state_dir(self) -> Path:
        return self.config.parent / "state"

    async def notice(self, timeout: float) -> bytes:
        data = await within(asyncio.get_running_loop().sock_recv(self.notify, 256), timeout)
        self.notified.append(data)
        return data

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 30) -> int:
        _, self.stderr = await within(self.proc.communicate(), timeout)
        assert self.proc.returncode is not None
        return self.proc.returncode

    def log_events(self, event: str) -> list[dict[str, object]]:
        """The JSON log entries named ``event`` (every process of the server writes to one pipe)."""
        import json

        decoder = json.JSONDecoder()
        text = self.stderr.decode(errors="replace")
        out, pos = [], 0
        while (start := text.find("{", pos)) >= 0:
            try:
                entry, pos = decoder.raw_decode(text, start)
            except ValueError:
                pos = start + 1
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                out.append(entry)
        return out


@contextlib.asynccontextmanager
async def serve_process(config: Path, workers: int = 1, port: int | None = None) -> AsyncIterator[Server]:
    """Run ``sipcore serve`` until READY=1 (bounded); SIGKILL it afterwards if the test did not stop it.
    ``port``: the SIP port (a restart on the one the phones' dialogs name), else a free one."""
    port = port or free_port()
    name = f"sipcore-test-{secrets.token_hex(6)}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("\0" + name)
    notify.setblocking(False)
    addr = f"127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET="@" + name)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--no-media", "--config", str(config), "--workers", str(workers),
        "--udp", addr, "--tcp", addr, "--metrics", "off", "--log-format", "json",
        cwd=config.parent, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    server = Server(proc, config, port, workers, notify)
    try:
        try:
            state = await server.notice(30)
        except TimeoutError:
            if proc.returncode is None:
                proc.kill()
            await server.wait()
            raise AssertionError(f"no READY=1: {server.stderr.decode(errors='replace')[-3000:]}") from None
        if state != b"READY=1":
            await server.wait()
            raise AssertionError(f"{state!r}: {server.stderr.decode(errors='replace')[-3000:]}")
        assert len(children_of(proc.pid)) == (workers if workers > 1 else 0)
        yield server
    finally:
        notify.close()
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def sipcore(*args: str, cwd: Path) -> tuple[int, str]:
    """Run a ``sipcore`` command; (exit status, stdout + stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await within(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def establish(caller: Ua, dialed: str, call_id: str, callee: Ua | None = None) -> Dialog:
    """INVITE on ``call_id`` (with its 407 round) → 200 → ACK; the callee (if given) sees the ACK."""
    dlg = caller.invite(dialed, call_id=call_id)
    first = await caller.response(call_id, final=True, timeout=5)
    assert first.status == 407, first.start_line()
    caller.ack(dlg, first)
    value = build_authorization(first.headers.get("proxy-authenticate") or "", username=caller.user,
                                password=caller.password, method="INVITE", uri=f"sip:{dialed}@{DOMAIN}",
                                cnonce=secrets.token_hex(4))  # fmt: skip
    dlg = caller.invite(dialed, 2, f"Proxy-Authorization: {value}\n", call_id, dlg.from_tag)
    final = await caller.response(call_id, timeout=5)
    assert final.status == 200, final.start_line()
    caller.ack(dlg, final)
    if callee is not None:
        await callee.expect(lambda m: getattr(m, "method", "") == "ACK" and m.call_id == call_id, 5, "ACK")
    return dlg


def cdr_rows(state_dir: Path) -> list[dict[str, object]]:
    db = sqlite3.connect(str(state_dir / "cdr.sqlite3"))
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM cdr ORDER BY start_us")]
    finally:
        db.close()
