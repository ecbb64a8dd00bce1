"""Brute-force guard on the wire: after N failed logins a source gets no answer at all (not even to
OPTIONS) while other sources are still served; scanners are dropped; bans show on /metrics."""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path

import pytest

from sipcore.waiting import within
from tests.registrar_sip.client import SipClient, options_bytes
from tests.registrar_sip.configs import DOMAIN
from tests.registrar_sip.conftest import Running, app_running

THRESHOLD = 3  # failure_threshold in the `guarded` fixture
SILENCE = 0.5  # how long "no answer" is awaited; a live answer on loopback takes milliseconds


async def metric(running: Running, name: str, labels: str) -> float:
    """One sample from the registrar's own /metrics endpoint (0 when absent)."""
    assert running.metrics is not None
    reader, writer = await within(asyncio.open_connection(*running.metrics), 3)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    body = (await within(reader.read(), 5)).decode()
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


def request_bytes(client: SipClient, method: str, user_agent: str) -> bytes:
    """A first request of ``method`` from 1001 to 1002 (OPTIONS: to the server itself)."""
    host, port = client.server
    ruri = f"sip:{host}:{port}" if method == "OPTIONS" else f"sip:1002@{DOMAIN}"
    extra = {
        "SUBSCRIBE": "Event: message-summary\r\nExpires: 600\r\n",
        "INVITE": "Content-Type: text/plain\r\n",
    }
    contact = f"Contact: <sip:1001@{client.local_host}:{client.local_port}>\r\n"
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{client.transport} {client.local_host}:{client.local_port};"
        f"branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:1002@{DOMAIN}>\r\nCall-ID: {secrets.token_hex(8)}\r\nCSeq: 1 {method}\r\n"
        f"{contact}{extra.get(method, '')}User-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS", "SUBSCRIBE", "MESSAGE", "REGISTER"])
async def test_scanner_refused_on_every_method(guarded: Running, method: str) -> None:
    """A scanner's first request, whatever its method, is dropped unanswered and bans its source; the
    same request with a phone's User-Agent is answered (INVITE 407, OPTIONS 200…)."""
    last = {"INVITE": 11, "OPTIONS": 12, "SUBSCRIBE": 13, "MESSAGE": 14, "REGISTER": 15}[method]
    before = await metric(guarded, "sipcore_bans_total", 'reason="scanner user-agent"')
    phone = await SipClient.open(guarded.address, "UDP", f"127.0.1.{last}")
    scanner = await SipClient.open(guarded.address, "UDP", f"127.0.2.{last}")
    try:
        answered = await phone.request(request_bytes(phone, method, "Yealink SIP-T46S"))
        assert answered is not None and answered.status >= 200
        assert await scanner.request(request_bytes(scanner, method, "friendly-scanner"), SILENCE) is None
        assert await metric(guarded, "sipcore_bans_total", 'reason="scanner user-agent"') == before + 1
        # banned: not even a phone-like OPTIONS from that source is answered any more
        assert await scanner.request(options_bytes(scanner), SILENCE) is None
        assert (await phone.request(options_bytes(phone))) is not None
    finally:
        await phone.close()
        await scanner.close()


async def test_slow_guessing_is_banned_on_the_wire(tmp_path: Path) -> None:
    """One wrong password a little more than every `window` seconds never reaches `failure_threshold`
    in the fixed window; the slow window (3 within 60 s here) bans it: the 3rd failure gets no answer."""
    guard = (
        "{failure_threshold: 2, window: 1, ban_time: 600, slow_window: 60, slow_threshold: 3, whitelist: []}"
    )
    async with app_running(tmp_path, guard=guard) as running:
        attacker = await running.phone("1001", source="127.0.0.6")
        try:
            for _ in range(2):
                resp = await attacker.register(expires=600, password="guess")
                assert resp is not None and resp.status == 401
                await asyncio.sleep(1.1)  # a new fixed window: its count starts again at 1
            assert await attacker.register(expires=600, password="guess", timeout=SILENCE) is None
            assert await attacker.client.request(options_bytes(attacker.client), SILENCE) is None
        finally:
            await attacker.client.close()


async def test_real_users_logins_do_not_save_the_guessers(tmp_path: Path) -> None:
    """Guessers on several addresses while 1001's phone keeps registering from its own: the per-user
    threshold bans the guessers (a success used to reset the username's count); the phone stays served."""
    guard = "{failure_threshold: 10, user_failure_threshold: 4, slow_threshold: 0, whitelist: []}"
    async with app_running(tmp_path, guard=guard) as running:
        real = await running.phone("1001", source="127.0.0.7")
        guessers = [await running.phone("1001", source=f"127.0.3.{i}") for i in range(1, 5)]
        try:
            for g in guessers[:3]:
                assert (r := await real.register(expires=600)) is not None and r.status == 200
                resp = await g.register(expires=600, password="guess")
                assert resp is not None and resp.status == 401
            assert (r := await real.register(expires=600)) is not None and r.status == 200
            # the 4th failure against 1001 since its phone's last login bans the source that made it
            assert await guessers[3].register(expires=600, password="guess", timeout=SILENCE) is None
            # and every other guesser on its next failure
            assert await guessers[0].register(expires=600, password="guess", timeout=SILENCE) is None
            assert (r := await real.register(expires=600)) is not None and r.status == 200
        finally:
            for p in (real, *guessers):
                await p.client.close()
