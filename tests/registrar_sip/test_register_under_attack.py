"""A username under attack on the wire (loopback out of the whitelist): once its failures reach
``user_failure_threshold``, a fresh 127.0.0.X source gets no checked guess — not even the right
password is answered, the attempt is counted and its source banned — while the real phone keeps
registering from its known address. (The ban lines and the fail2ban filter are checked on a real
server's output in tests/server/test_workers_guard.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.guard_guessing import invite_guess
from tests.registrar_sip.configs import PASSWORDS
from tests.registrar_sip.conftest import app_running
from tests.registrar_sip.test_register_guard import SILENCE, metric

GUARD = "{failure_threshold: 10, user_failure_threshold: 4, slow_threshold: 0, whitelist: []}"


@pytest.mark.timeout(60)
async def test_fresh_sources_get_no_checked_guess(tmp_path: Path) -> None:
    async with app_running(tmp_path, guard=GUARD, metrics_port=_port()) as running:
        refused_before = await metric(running, "sipcore_auth_failures_total", 'reason="under attack"')
        real = await running.phone("1001", source="127.0.0.8")
        guessers = [await running.phone("1001", source=f"127.0.5.{i}") for i in range(1, 4)]
        fresh = [await running.phone("1001", source=f"127.0.6.{i}") for i in range(1, 6)]
        try:
            assert (r := await real.register(expires=600)) is not None and r.status == 200
            for g in guessers:
                resp = await g.register(expires=600, password="guess")
                assert resp is not None and resp.status == 401
            # the 4th failure against 1001 puts it under attack (and bans the source that made it)
            assert await fresh[0].register(expires=600, password="guess", timeout=SILENCE) is None
            for phone in fresh[1:]:
                # a fresh source's challenge is answered (no credentials: nothing checked) …
                first = await phone.client.request(phone.build(expires=600))
                assert first is not None and first.status == 401
                # … but its credentials are not checked: even the right password gets no answer
                auth = phone.answer(first)
                assert (
                    await phone.client.request(phone.build(expires=600, authorization=auth), SILENCE) is None
                )
                assert (r := await real.register(expires=600)) is not None and r.status == 200
            assert (
                await metric(running, "sipcore_auth_failures_total", 'reason="under attack"')
                == refused_before + 4
            )
            # a wrong password from the real phone's own address is answered (a typo), not banned
            assert (r := await real.register(expires=600, password="typo")) is not None and r.status == 401
            assert (r := await real.register(expires=600)) is not None and r.status == 200
        finally:
            for p in (real, *guessers, *fresh):
                await p.client.close()


def _port() -> int:
    from tests.conftest import free_port

    return free_port()


@pytest.mark.timeout(60)
async def test_invite_from_a_fresh_source_is_not_checked_either(tmp_path: Path) -> None:
    """The same rule for INVITE (Proxy-Authorization): under attack, the right password from a new
    address is dropped unchecked; from the address the phone registered from it is checked (answered)."""
    async with app_running(tmp_path, guard=GUARD) as running:
        real = await running.phone("1001", source="127.0.16.20")
        guessers = [await running.phone("1001", source=f"127.0.16.{i}") for i in range(1, 5)]
        try:
            assert (r := await real.register(expires=600)) is not None and r.status == 200
            for g in guessers:  # the 4th failure puts 1001 under attack
                await g.register(expires=600, password="guess", timeout=SILENCE)
            assert await invite_guess(running.address, "127.0.16.9", "1001", PASSWORDS["1001"]) is None
            status = await invite_guess(running.address, "127.0.16.20", "1001", PASSWORDS["1001"])
            assert status == 480  # authenticated and routed: 1002 is not registered
            assert await invite_guess(running.address, "127.0.16.21", "1001", "guess") is None
        finally:
            for p in (real, *guessers):
                await p.client.close()
