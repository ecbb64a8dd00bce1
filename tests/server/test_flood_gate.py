"""The flood gate (server/flood_gate.py) with the real guard and rate limit: a source over the limit
is banned in the guard's one ban list, logged and counted, and dropped unread from then on; the
whitelist and trunks are exempt. With nftables (we run as root here) the ban reaches a real set and
the kernel drops the banned source's datagrams before the socket."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import structlog

from registrar.guard import BanReason, Guard, GuardConfig
from registrar.pike import Pike, PikeConfig
from server import metrics
from server.flood_gate import NFT_ELEMENTS, RATE_EXCEEDED, FloodGate
from server.nft_bans import NftBanMirror, nft_script
from server.registrar_service import BANS, RegistrarService
from sipcore.flow import Flow
from sipcore.waiting import within
from tests.conftest import free_port

TRUNK = "198.51.100.7"


def flow(ip: str, port: int = 5060) -> Flow:
    return Flow("udp", (ip, port), ("127.0.0.1", 5060))


def make_gate(
    requests: int = 5, mirror: NftBanMirror | None = None, whitelist: tuple[str, ...] = ()
) -> tuple[FloodGate, Guard]:
    guard = Guard(GuardConfig(whitelist=whitelist))
    pike = Pike(PikeConfig(requests=requests, window=10.0, ban_time=42.0))
    gate = FloodGate(lambda: guard, pike, lambda ip, port: ip == TRUNK, RegistrarService._report_ban, mirror)
    return gate, guard


def test_a_source_over_the_rate_is_banned_logged_counted_and_dropped() -> None:
    gate, guard = make_gate()
    bans_before = BANS.value(BanReason.RATE.value)
    banned_drops = metrics.DROPPED.value("banned")
    with structlog.testing.capture_logs() as logs:
        answers = [gate.admit(flow("203.0.113.5")) for _ in range(6)]
    assert answers == [True] * 5 + [False]
    assert guard.is_banned("203.0.113.5", time.time())
    assert guard.banned(time.time())["203.0.113.5"] == pytest.approx(time.time() + 42.0, abs=2)
    assert BANS.value(BanReason.RATE.value) == bans_before + 1
    ban_lines = [e for e in logs if e["event"] == "source_banned"]
    assert len(ban_lines) == 1 and ban_lines[0]["source"] == "203.0.113.5"
    assert ban_lines[0]["reason"] == "request rate"
    rate_lines = [e for e in logs if e["event"] == "rate_exceeded"]
    assert len(rate_lines) == 1 and rate_lines[0]["source"] == "203.0.113.5" and rate_lines[0]["rate"] > 0
    assert rate_lines[0]["limit"] == "5/10s" and rate_lines[0]["ban_time"] == 42.0
    assert not any(gate.admit(flow("203.0.113.5", 7000 + i)) for i in range(100))  # any port: dropped
    assert metrics.DROPPED.value("banned") == banned_drops + 100
    assert gate.admit(flow("203.0.113.6"))  # another source is not touched


def test_whitelist_and_trunks_are_exempt() -> None:
    gate, guard = make_gate(whitelist=("192.0.2.0/24",))
    exempt = RATE_EXCEEDED.value("exempt")
    assert all(gate.admit(flow("192.0.2.10")) for _ in range(100))
    assert all(gate.admit(flow(TRUNK)) for _ in range(100))
    assert not guard.banned(time.time())
    assert RATE_EXCEEDED.value("exempt") >= exempt + 2 * (100 // 6)  # reported once per excess


def test_ipv6_banned_per_64() -> None:
    gate, _ = make_gate()
    for i in range(6):
        gate.admit(flow(f"2001:db8:5:6::{i + 1}"))
    assert not gate.admit(flow("2001:db8:5:6:abcd::1"))  # same /64
    assert gate.admit(flow("2001:db8:5:7::1"))


def test_without_rate_limit_the_gate_still_drops_banned_sources() -> None:
    guard = Guard(GuardConfig(whitelist=()))
    gate = FloodGate(lambda: guard, None, lambda ip, port: False, RegistrarService._report_ban)
    assert all(gate.admit(flow("203.0.113.9")) for _ in range(1000))
    guard.ban("203.0.113.9", BanReason.SCANNER, time.time())
    assert not gate.admit(flow("203.0.113.9"))


def test_nft_script_batches_per_family() -> None:
    script, count = nft_script(
        {"203.0.113.5": 42.0, "2001:db8::/64": 0.2, "203.0.113.6": 300}, "inet t b4", "inet t b6"
    )
    assert count == 3
    assert script == (
        "add element inet t b4 { 203.0.113.5 timeout 42s, 203.0.113.6 timeout 300s }\n"
        "add element inet t b6 { 2001:db8::/64 timeout 1s }\n"
    )
    assert nft_script({"2001:db8::/64": 5}, "inet t b4", None) == ("", 0)  # no IPv6 set: left out


# ---- real nftables ------------------------------------------------------------------------------------
def _nft(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=10)


@pytest.fixture
def nft_table() -> Iterator[tuple[str, int]]:
    """A table of our own (unique name) whose rule drops banned sources on one free UDP port only;
    deleted afterwards. Skipped when nft is missing or not permitted."""
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    if os.geteuid() != 0:
        pytest.skip("nftables needs root (or CAP_NET_ADMIN)")
    name = f"sipcore_test_{secrets.token_hex(4)}"
    port = free_port()
    made = _nft(
        f"table inet {name} {{\n"
        "  set banned4 { type ipv4_addr; flags timeout; }\n"
        "  set banned6 { type ipv6_addr; flags interval, timeout; }\n"
        "  chain pre { type filter hook prerouting priority -300; policy accept;\n"
        f"    ip saddr @banned4 udp dport {port} drop\n"
        f"    ip6 saddr @banned6 udp dport {port} drop\n"
        "  }\n}\n"
    )
    if made.returncode != 0:
        pytest.skip(f"nft not permitted here: {made.stderr.strip()}")
    try:
        yield name, port
    finally:
        _nft(f"delete table inet {name}\n")


def _received(sock: socket.socket) -> int:
    got = 0
    while True:
        try:
            sock.recv(2048)
            got += 1
        except BlockingIOError:
            return got


async def test_bans_reach_nftables_and_the_kernel_drops_the_banned_source(nft_table: tuple[str, int]) -> None:
    name, port = nft_table
    mirror = NftBanMirror(f"inet {name} banned4", f"inet {name} banned6")
    gate, guard = make_gate(mirror=mirror)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", port))
    server.setblocking(False)
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooder.bind(("127.0.0.77", 0))
    try:
        for _ in range(5):
            flooder.sendto(b"OPTIONS", ("127.0.0.1", port))
        await asyncio.sleep(0.05)
        assert _received(server) == 5  # before the ban: through
        for _ in range(6):
            gate.admit(flow("127.0.0.77"))
        for i in range(6):
            gate.admit(flow(f"2001:db8:9:9::{i + 1}"))
        assert guard.is_banned("127.0.0.77", time.time())
        await within(mirror.wait_idle(), 10)
        assert mirror.added == 2 and mirror.failed == 0
        assert NFT_ELEMENTS.value("added") == 2
        listed = subprocess.run(["nft", "list", "table", "inet", name], capture_output=True, text=True).stdout
        assert "127.0.0.77 timeout 42s" in listed and "2001:db8:9:9::/64 timeout 42s" in listed
        for _ in range(50):
            flooder.sendto(b"OPTIONS", ("127.0.0.1", port))
        await asyncio.sleep(0.05)
        assert _received(server) == 0  # the kernel dropped them before the socket
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.bind(("127.0.0.78", 0))
        other.sendto(b"OPTIONS", ("127.0.0.1", port))
        other.close()
        await asyncio.sleep(0.05)
        assert _received(server) == 1  # another source still gets through
        # each ban mirrored once, not once per dropped message
        for _ in range(100):
            gate.admit(flow("127.0.0.77"))
        await within(mirror.wait_idle(), 10)
        assert mirror.added == 2
    finally:
        server.close()
        flooder.close()


async def test_nft_failure_is_logged_and_counted_never_raised() -> None:
    mirror = NftBanMirror("inet sipcore_no_such_table_x banned4", None)
    gate, guard = make_gate(mirror=mirror)
    with structlog.testing.capture_logs() as logs:
        for _ in range(6):
            gate.admit(flow("203.0.113.50"))
        await within(mirror.wait_idle(), 10)
    assert guard.is_banned("203.0.113.50", time.time())  # the server's own drop holds anyway
    assert mirror.failed == 1 and mirror.added == 0
    assert any(e["event"] == "nft_ban_failed" for e in logs)
    missing = NftBanMirror("inet t b4", None, nft="/nonexistent/nft")
    missing.add("203.0.113.51", 10)
    await within(missing.wait_idle(), 10)
    assert missing.failed == 1


def test_reload_replaces_the_limit_and_the_mirror() -> None:
    mirror = NftBanMirror("inet a b4", None)
    gate, guard = make_gate(requests=5, mirror=mirror)
    for _ in range(4):
        gate.admit(flow("203.0.113.60"))
    gate.update(Pike(PikeConfig(requests=100, window=10.0)), NftBanMirror("inet a b4", None))
    assert gate.mirror is mirror  # same sets: the mirror (and what it has mirrored) kept
    assert all(gate.admit(flow("203.0.113.60")) for _ in range(50))  # the new, higher limit
    gate.update(None, None)
    assert gate.mirror is None and gate.pike is None
    assert all(gate.admit(flow("203.0.113.61")) for _ in range(500))  # no rate limit any more
    assert not guard.banned(time.time())
