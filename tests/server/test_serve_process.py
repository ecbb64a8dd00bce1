"""`sipcore serve` as a real process: READY=1 over NOTIFY_SOCKET, OPTIONS answered, /metrics and
/healthz served, clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from sipcore.waiting import within
from tests.conftest import free_port
from tests.server.wire import options, udp_client

ROOT = Path(__file__).resolve().parents[2]


def _http_get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return resp.status, resp.read()


@pytest.mark.timeout(60)
async def test_serve_process_lifecycle() -> None:
    sip_port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        notify_path = os.path.join(tmp, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.setblocking(False)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "serve", "--no-media",
            "--udp", f"127.0.0.1:{sip_port}", "--tcp", f"127.0.0.1:{sip_port}",
            "--metrics", f"127.0.0.1:{metrics_port}", "--log-format", "json",
            cwd=tmp, env=dict(env, PYTHONPATH=str(ROOT)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            loop = asyncio.get_running_loop()
            ready = await within(loop.sock_recv(notify, 64), 20)
            assert ready == b"READY=1"
            client = await udp_client()
            try:
                client.send(options("127.0.0.1", sip_port, client.port), ("127.0.0.1", sip_port))
                data = await client.recv(3)
                assert data is not None and data.startswith(b"SIP/2.0 200 OK")
            finally:
                client.close()
            status, body = await asyncio.to_thread(_http_get, f"http://127.0.0.1:{metrics_port}/metrics")
            assert status == 200
            assert b'sipcore_requests_total{method="OPTIONS"} 1.0' in body
            assert b'sipcore_responses_sent_total{code="200"} 1.0' in body
            status, body = await asyncio.to_thread(_http_get, f"http://127.0.0.1:{metrics_port}/healthz")
            assert status == 200 and json.loads(body)["status"] == "ok"
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            _, err = await within(proc.communicate(), 15)
            notify.close()
        assert proc.returncode == 0, err.decode()[-2000:]
        first = err.decode().splitlines()[0]
        assert json.loads(first)["event"]  # structured JSON log lines
