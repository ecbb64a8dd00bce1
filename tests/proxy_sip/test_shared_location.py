"""Calls with the shared (Redis) location store, as several proxy processes would run. Uses the real
Redis at 127.0.0.1:6379 under a key prefix private to the test (deleted afterwards); skipped when
Redis is unreachable."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from tests.proxy_sip.conftest import platform

pytestmark = pytest.mark.timeout(30)  # every wait inside is bounded; this bounds the whole test

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


async def test_call_to_phone_registered_in_redis(tmp_path: Path) -> None:
    if not _redis_up():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    import redis.asyncio as aioredis

    prefix = f"sipcore-proxytest-{uuid.uuid4().hex[:12]}:"
    location = f'{{backend: redis, url: "{REDIS_URL}", key_prefix: "{prefix}"}}'
    try:
        async with platform(tmp_path, location=location) as proxy:
            alice = await proxy.phone("1001")
            bruno = await proxy.phone("1002")
            dlg = await alice.call("1002")
            final = await alice.response(dlg.call_id)
            assert final.status == 200, final.start_line()
            assert (await bruno.request("INVITE")).call_id == dlg.call_id
    finally:
        client = aioredis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
