"""The location store through Redis Sentinel (issue 21): the master is discovered from the sentinels,
and a failover (SENTINEL FAILOVER promoting the replica) is followed -- registrations go on through
it (locally while no master answers, `registrar.location.fallback`) and are all on the new master
afterwards. A private master + replica + sentinel, started by the test (tests/server/sentinel_helpers)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from registrar.location import ContactChange, Flow, RedisLocationStore, RegisterChanges
from registrar.location.fallback import FallbackLocationStore
from registrar.location.resp import Endpoint, RedisReplyError
from registrar.location.sentinel import SentinelClient, parse_address, redis_client
from tests.cdr.helpers import wait_until
from tests.server.sentinel_helpers import MASTER_NAME, SentinelSet

pytestmark = pytest.mark.timeout(90)

UDP = Flow("udp", "198.51.100.7", 5060, "203.0.113.5:5060")
PREFIX = "sentinel-test:loc"


def reg(user: str, cseq: int) -> tuple[str, RegisterChanges]:
    aor = f"sip:{user}@acme.example"
    return aor, RegisterChanges(f"call-{user}", cseq, UDP, (ContactChange(f"sip:{user}@10.0.0.1", 600),))


def test_sentinel_addresses_are_read_with_the_default_port() -> None:
    assert parse_address("10.0.0.5:26380") == ("10.0.0.5", 26380)
    assert parse_address("sentinel-a") == ("sentinel-a", 26379)
    assert parse_address("[::1]:26381") == ("::1", 26381)
    assert isinstance(redis_client("redis://:pw@x/2", ("a:1",), "m"), SentinelClient)


@pytest.fixture
async def sentinels(tmp_path: Path) -> AsyncIterator[SentinelSet]:
    deployment = SentinelSet(tmp_path, sentinels=1)
    try:
        await deployment.start()
        yield deployment
    finally:
        deployment.stop()


async def test_registrations_follow_a_sentinel_failover(sentinels: SentinelSet) -> None:
    client = redis_client(
        "redis://127.0.0.1/0", tuple(sentinels.sentinel_addresses), MASTER_NAME, timeout=1.0
    )
    assert isinstance(client, SentinelClient)
    redis = RedisLocationStore(client, prefix=PREFIX, owns_client=True)
    store = FallbackLocationStore(redis, timeout=0.5, retry_interval=0.1, on_reconnect=client.reconnect,
                                  master_epoch=lambda: client.switches)  # fmt: skip
    old, new = sentinels.redis_ports
    try:
        for n in range(20):
            aor, changes = reg(f"u{n}", 1)
            await store.apply(aor, changes, time.time())
        assert client.master == ("127.0.0.1", old)

        await sentinels.failover()
        await sentinels.wait_master_is(new)
        # every REGISTER is answered through the switch, 20 more users and a refresh of the first 20
        for n in range(40):
            aor, changes = reg(f"u{n}", 2)
            result = await store.apply(aor, changes, time.time())
            assert len(result.bindings) == 1

        async def on_new_master() -> bool:
            await store.expire(time.time())  # the server's once-a-second sweep
            return store.up and client.master == ("127.0.0.1", new) and store.replays >= 1 and not store.dirty

        await wait_until(on_new_master, timeout=20)
        direct = aioredis.Redis(port=new)
        try:
            keys = [k async for k in direct.scan_iter(match=f"{PREFIX}:aor:*", count=500)]
            assert len(keys) == 40
            for n in range(40):
                stored = await redis.get(f"sip:u{n}@acme.example", time.time())
                assert [b.cseq for b in stored] == [2]
        finally:
            await direct.aclose()
    finally:
        await store.close()


async def test_a_demoted_master_is_left_for_the_new_one(sentinels: SentinelSet) -> None:
    """The old master lives on as a replica after the failover. A client that has not checked the
    sentinels since finds its connection dropped (Redis 7) or gets READONLY (and drops it): its next
    request goes to the new master; a client that checks (every ``check_interval``) leaves the old
    master by itself."""
    addresses = tuple(parse_address(a) for a in sentinels.sentinel_addresses)
    endpoint = Endpoint.from_url("redis://127.0.0.1/0")
    unchecked = SentinelClient(addresses, MASTER_NAME, endpoint, timeout=1.0, check_interval=3600)
    checking = SentinelClient(addresses, MASTER_NAME, endpoint, timeout=1.0, check_interval=0.2)
    old, new = sentinels.redis_ports
    try:
        assert await unchecked.call("SET", "k", "1") == b"OK"
        assert await checking.call("SET", "k", "1") == b"OK"
        await sentinels.failover()
        await sentinels.wait_master_is(new)

        async def demoted() -> bool:
            return await _role_is(old, b"slave")

        await wait_until(demoted, timeout=20)
        try:  # Redis 7 drops its clients when it turns replica; an older one answers READONLY
            await unchecked.call("SET", "k", "2")
        except RedisReplyError as exc:
            assert str(exc).startswith("READONLY"), exc
        assert await unchecked.call("SET", "k", "3") == b"OK"
        assert unchecked.master == ("127.0.0.1", new) and unchecked.switches == 1

        async def left_old() -> bool:
            return checking._conn is None or checking._conn.closed

        await wait_until(left_old, timeout=10)
        assert await checking.call("SET", "k", "4") == b"OK"
        assert checking.master == ("127.0.0.1", new) and checking.switches == 1
    finally:
        await unchecked.close()
        await checking.close()


async def _role_is(port: int, role: bytes) -> bool:
    direct = aioredis.Redis(port=port)
    try:
        return (await direct.execute_command("ROLE"))[0] in (role, role.decode())
    finally:
        await direct.aclose()
