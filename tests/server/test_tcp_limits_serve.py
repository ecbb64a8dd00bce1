"""TCP connection limits of `sipcore serve` with 1 and 2 workers: the server's cap split between the
workers, connections beyond it refused and counted in the merged /metrics, the connections gauge equal
to the connections open, /healthz and an existing client served at the cap, a slowloris closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from sipcore.waiting import within
from tests.conftest import free_port
from tests.proxy_sip.configs import write_config
from tests.server.wire import options, read_message
from tests.server.workers_helpers import Served, metric, serve

pytestmark = pytest.mark.timeout(120)

CAP = 8
BOUND = 15.0


def limited_config(base: Path, port: int) -> Path:
    path = write_config(base, port, free_port())
    text = path.read_text(encoding="utf-8")
    limits = (
        f"  limits: {{max_tcp_connections: {CAP}, tcp_message_timeout: 2, tcp_min_byte_rate: 50,"
        " tcp_idle_timeout: 600}\n"
    )
    path.write_text(text.replace("  metrics: null\n", "  metrics: null\n" + limits), encoding="utf-8")
    return path


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_and_ask(served: Served, source: str) -> tuple[Conn | None, bool]:
    """A connection from ``source`` and whether an OPTIONS on it was answered (None: refused at once)."""
    try:
        reader, writer = await within(asyncio.open_connection(*served.address, local_addr=(source, 0)), 5)
    except (ConnectionError, TimeoutError):
        return None, False
    try:
        writer.write(options(*served.address, writer.get_extra_info("sockname")[1], "TCP"))
        await writer.drain()
        head = await read_message(reader, 3.0)
    except ConnectionError:
        head = None
    if head is None or not head.startswith(b"SIP/2.0 200"):
        writer.close()
        return None, False
    return (reader, writer), True


async def http_get(port: int, path: str) -> tuple[bytes, bytes]:
    reader, writer = await within(asyncio.open_connection("127.0.0.1", port), 3)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = await within(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def settled_metrics(served: Served, connections: int) -> str:
    """/metrics once the gauge says ``connections`` (the server sees a close a moment after the client)."""
    text = ""
    for _ in range(100):
        text = await served.metrics()
        if metric(text, "sipcore_tcp_connections") == connections:
            return text
        await asyncio.sleep(0.05)
    return text


@pytest.mark.parametrize("workers", [1, 2])
async def test_cap_refusals_gauge_health_and_slowloris(tmp_path: Path, workers: int) -> None:
    port = free_port()
    config = limited_config(tmp_path / "srv", port)
    async with serve(config, workers=workers, port=port) as served:
        good, ok = await open_and_ask(served, "127.0.0.1")
        assert good is not None and ok
        held: list[Conn] = [good]
        refused = 0
        try:
            for i in range(20):
                conn, ok = await open_and_ask(served, f"127.0.0.{10 + i}")
                if conn is None:
                    refused += 1
                else:
                    held.append(conn)
            if workers == 1:
                assert len(held) == CAP
            else:  # each worker takes CAP / 2; which one accepts a connection is the kernel's choice
                assert CAP // 2 <= len(held) <= CAP
            assert refused == 21 - len(held)
            text = await settled_metrics(served, len(held))
            assert metric(text, "sipcore_tcp_connections") == len(held)  # merged over the workers
            assert metric(text, "sipcore_tcp_connection_cap") == CAP
            assert metric(text, "sipcore_tcp_refused_total", reason="cap") == refused
            assert metric(text, "sipcore_tcp_refused_total", reason="per_source") == 0
            head, body = await http_get(served.metrics_port, "/healthz")
            assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["status"] == "ok"
            reader, writer = good
            writer.write(options(*served.address, writer.get_extra_info("sockname")[1], "TCP"))
            answer = await read_message(reader, 3.0)
            assert answer is not None and answer.startswith(b"SIP/2.0 200")  # still served at the cap

            # a place freed on every worker, then half a message that never ends
            for _, w in held[1:]:
                w.close()
            held = [good]
            await settled_metrics(served, 1)
            reader, writer = await asyncio.open_connection(*served.address, local_addr=("127.0.0.99", 0))
            held.append((reader, writer))
            writer.write(options(*served.address, writer.get_extra_info("sockname")[1], "TCP")[:80])
            with contextlib.suppress(ConnectionResetError):
                assert await within(reader.read(), BOUND) == b""
            text = await settled_metrics(served, 1)
            assert metric(text, "sipcore_tcp_closed_total", reason="message_timeout") == 1
            assert metric(text, "sipcore_tcp_connections") == 1
        finally:
            for _, w in held:
                w.close()
        assert await served.stop() == 0
    log = served.stderr.decode(errors="replace")
    assert "Traceback" not in log
    refusals = [json.loads(line) for line in log.splitlines() if '"tcp_refused"' in line]
    assert refusals and all(r["reason"] == "cap" for r in refusals)
    assert len(refusals) <= 2 * workers  # throttled: not one line per refusal
