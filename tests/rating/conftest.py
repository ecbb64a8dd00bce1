"""Counter stores for the contract suite: memory, and Redis for real (skipped if unreachable)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from rating.balance_redis import RedisCounterStore
from rating.counters import CounterStore, MemoryCounterStore

REDIS_URL = "redis://127.0.0.1:6379/0"


async def redis_client() -> aioredis.Redis:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc!r}")
    return client


async def drop_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test, so parallel runs never collide."""
    return f"test:rating:{uuid.uuid4().hex}:"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        yield MemoryCounterStore()
        return
    client = await redis_client()
    try:
        yield RedisCounterStore(client, prefix=prefix)
    finally:
        await drop_prefix(client, prefix)
        await client.aclose()
