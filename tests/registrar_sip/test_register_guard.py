"""Brute-force guard on the wire: after N failed logins a source gets no answer at all (not even to
OPTIONS) while other sources are still served; scanners are dropped; bans show on /metrics."""

from __future__ import annotations

import asyncio
import re

from tests.registrar_sip.client import options_bytes
from tests.registrar_sip.conftest import Running

THRESHOLD = 3  # failure_threshold in the `guarded` fixture
SILENCE = 0.5  # how long "no answer" is awaited; a live answer on loopback takes milliseconds


async def metric(running: Running, name: str, labels: str) -> float:
    """One sample from the registrar's own /metrics endpoint (0 when absent)."""
    assert running.metrics is not None
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*running.metrics), 3)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    body = (await asyncio.wait_for(reader.read(), 5)).decode()
    writer.close()
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


async def test_failures_ban_the_source_silently(guarded: Running) -> None:
    bans_before = await metric(guarded, "sipcore_bans_total", 'reason="failures from source"')
    attacker = await guarded.phone("1001", source="127.0.0.2")
    honest = await guarded.phone("1002", source="127.0.0.3")
    try:
        for _ in range(THRESHOLD - 1):
            resp = await attacker.register(expires=600, password="guess")
            assert resp is not None and resp.status == 401
        # the Nth failure bans: no answer, not even to OPTIONS, nor to the right password
        assert await attacker.register(expires=600, password="guess", timeout=SILENCE) is None
        assert await attacker.client.request(options_bytes(attacker.client), SILENCE) is None
        assert await attacker.register(expires=600, timeout=SILENCE) is None
        assert await metric(guarded, "sipcore_bans_total", 'reason="failures from source"') == bans_before + 1
        # another source is still served
        assert (await honest.client.request(options_bytes(honest.client))).status == 200  # type: ignore[union-attr]
        resp = await honest.register(expires=600)
        assert resp is not None and resp.status == 200
    finally:
        await attacker.client.close()
        await honest.client.close()


async def test_tcp_source_is_banned_too(guarded: Running) -> None:
    attacker = await guarded.phone("9999", transport="TCP", source="127.0.0.4")
    try:
        for _ in range(THRESHOLD - 1):
            resp = await attacker.register(expires=600, password="guess")
            assert resp is not None and resp.status == 401
        assert await attacker.register(expires=600, password="guess", timeout=SILENCE) is None
        assert await attacker.client.request(options_bytes(attacker.client), SILENCE) is None
    finally:
        await attacker.client.close()


async def test_scanner_user_agent_is_dropped_and_banned(guarded: Running) -> None:
    before = await metric(guarded, "sipcore_bans_total", 'reason="scanner user-agent"')
    scanner = await guarded.phone("1001", source="127.0.0.5", user_agent="friendly-scanner")
    try:
        assert await scanner.client.request(scanner.build(expires=600), SILENCE) is None
        assert await scanner.client.request(options_bytes(scanner.client, "probe"), SILENCE) is None
        assert await metric(guarded, "sipcore_bans_total", 'reason="scanner user-agent"') == before + 1
        assert await metric(guarded, "sipcore_bans_active", "") >= 0  # gauge exported (swept every second)
    finally:
        await scanner.client.close()
