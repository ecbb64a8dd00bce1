"""The UDP receive queue each socket asks the kernel for (`server.limits.udp_receive_buffer`): what
`bind_udp` asks, the configuration's default and bounds, and what `sipcore serve` holds with one
process and with two workers (steered sockets and the shared one), at start and after a reload; and
what the kernel dropped at those sockets, in `sipcore_udp_receive_dropped_total`.

The kernel doubles a request for its own bookkeeping and caps it at ``net.core.rmem_max``: the tests
ask sizes below the stock cap (212,992 bytes) and compare with what ``ss`` reports (``rb``)."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from pathlib import Path

import pytest

from config.schema import Limits
from sipcore.transport import (
    DEFAULT_UDP_RECEIVE_BUFFER,
    TransportLimits,
    TransportManager,
    bind_udp,
    receive_dropped,
)
from tests.server.lifecycle_helpers import lifecycle_config, sipcore
from tests.server.workers_helpers import metric, serve

pytestmark = pytest.mark.timeout(120)


def skmem(port: int, field: str) -> list[int]:
    """One figure of ``ss``'s socket memory line (``rb``: receive buffer, ``d``: dropped) for every
    UDP socket bound to ``port`` on this host."""
    out = subprocess.run(
        ["ss", "-u", "-a", "-n", "-m", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return [int(v) for v in re.findall(rf"[(,]{field}(\d+)[,)]", out)]


def receive_buffers(port: int) -> list[int]:
    return skmem(port, "rb")


def test_bind_udp_asks_for_the_receive_buffer_given() -> None:
    sock = bind_udp("127.0.0.1:0", receive_buffer=131_072)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * 131_072
        assert receive_buffers(sock.getsockname()[1]) == [2 * 131_072]
    finally:
        sock.close()


def test_the_default_is_the_same_in_the_configuration_and_the_transport() -> None:
    assert Limits().udp_receive_buffer == TransportLimits().udp_receive_buffer == DEFAULT_UDP_RECEIVE_BUFFER
    assert DEFAULT_UDP_RECEIVE_BUFFER == 512 * 1024
    for bad in (65_535, (1 << 28) + 1):
        with pytest.raises(ValueError, match="udp_receive_buffer"):
            Limits(udp_receive_buffer=bad)


async def test_new_limits_resize_the_sockets_a_manager_reads() -> None:
    manager = TransportManager(lambda data, flow: None, TransportLimits(udp_receive_buffer=100_000))
    await manager.start(["127.0.0.1:0"], [])
    try:
        port = manager.udp[0].local[1]
        assert receive_buffers(port) == [200_000]
        manager.set_limits(TransportLimits(udp_receive_buffer=150_000, max_message_size=4096))
        assert receive_buffers(port) == [300_000]
        assert manager.limits.max_message_size == 4096
    finally:
        await manager.close()


@pytest.mark.parametrize(("workers", "steering"), [(1, True), (2, True), (2, False)])
async def test_serve_sizes_every_udp_socket_from_the_configuration_and_a_reload(
    tmp_path: Path, workers: int, steering: bool
) -> None:
    config = lifecycle_config(tmp_path, 9)
    text = config.read_text()
    if not steering:  # the workers share one socket
        text = text.replace("  state_dir:", "  udp_steering: false\n  state_dir:", 1)
    config.write_text(text.replace("  state_dir:", "  limits: {udp_receive_buffer: 100000}\n  state_dir:", 1))
    async with serve(config, workers) as served:
        # one process: its socket; two workers: one steered socket each, or the one they share
        sizes = receive_buffers(served.port)
        assert sizes and set(sizes) == {200_000}, sizes
        if workers == 1 or not steering:
            assert len(sizes) == 1
        config.write_text(
            text.replace("  state_dir:", "  limits: {udp_receive_buffer: 150000}\n  state_dir:", 1)
        )
        code, out = await sipcore(
            "reload", "--config", str(config), "--pid", str(served.proc.pid), cwd=tmp_path
        )
        assert code == 0 and "server.limits" in out and "needs a restart" not in out, out
        for _ in range(100):  # every worker applies it on its own
            if set(receive_buffers(served.port)) == {300_000}:
                break
            await asyncio.sleep(0.05)
        assert receive_buffers(served.port) == [300_000] * len(sizes)


def kernel_drops(port: int) -> list[int]:
    return skmem(port, "d")


def flood(port: int, count: int = 20_000) -> None:
    """``count`` datagrams of 1,200 bytes as fast as one socket sends them: far more than a small
    queue holds before the server reads it."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        payload = b"x" * 1200
        for _ in range(count):
            try:
                client.sendto(payload, ("127.0.0.1", port))
            except OSError:  # the host's own send queue full: the next ones go
                pass
    finally:
        client.close()


def test_receive_dropped_reads_the_sockets_own_drop_count() -> None:
    sock = bind_udp("127.0.0.1:0", receive_buffer=65_536)
    try:
        assert receive_dropped(sock) == 0
        flood(sock.getsockname()[1], 2_000)  # nobody reads: all but the first ~50 are dropped
        dropped = receive_dropped(sock)
        assert dropped is not None and dropped > 1_000
        assert kernel_drops(sock.getsockname()[1]) == [dropped]
    finally:
        sock.close()


@pytest.mark.parametrize(("workers", "steering"), [(1, True), (2, True), (2, False)])
async def test_metrics_count_what_the_kernel_dropped_at_the_servers_sockets(
    tmp_path: Path, workers: int, steering: bool
) -> None:
    config = lifecycle_config(tmp_path, 9)
    text = config.read_text().replace(
        "  state_dir:", "  limits: {udp_receive_buffer: 65536}\n  state_dir:", 1
    )
    if not steering:
        text = text.replace("  state_dir:", "  udp_steering: false\n  state_dir:", 1)
    config.write_text(text)
    async with serve(config, workers) as served:
        assert metric(await served.metrics(), "sipcore_udp_receive_dropped_total") == 0
        await asyncio.to_thread(flood, served.port)
        await asyncio.sleep(0.5)
        dropped = kernel_drops(served.port)
        assert sum(dropped) > 0, dropped
        exposition = await served.metrics()
        # one series per socket, summed by the scrape across steered sockets, not doubled when shared
        assert metric(exposition, "sipcore_udp_receive_dropped_total") == sum(dropped)
        series = [
            line for line in exposition.splitlines() if line.startswith("sipcore_udp_receive_dropped_total{")
        ]
        assert len(series) == len(dropped), series
        assert all(f'address="127.0.0.1:{served.port}"' in line for line in series)
