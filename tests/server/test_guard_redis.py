"""The brute-force guard shared by the hosts of a platform through Redis (`server.guard_redis`), on a
real Redis (a key prefix per test), each "host" a pure `Guard` with its own adapter: a ban decided by
one is stored with its expiry, installed by every other and by a host that starts later; failures add
up across hosts (a source's count, a username under attack), logins make a source known everywhere;
exempt sources are never installed; a longer ban is not shortened; bans follow a Sentinel failover;
with Redis gone each host keeps its own guard, and a ban decided meanwhile reaches the others once
Redis is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from registrar.guard import BanReason, Guard, GuardConfig, IpBanned
from server.guard_redis import RedisGuardShare
from tests.registrar_sip.conftest import redis_namespace
from tests.server.counters_shared_helpers import PrivateRedis, wait_listening
from tests.server.sentinel_helpers import MASTER_NAME, SentinelSet
from tests.server.test_account_state import until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

REDIS_URL = "redis://127.0.0.1:6379/0"
CONFIG = GuardConfig(ip_threshold=3, user_threshold=4, slow_threshold=0, ban_time=600, whitelist=())


class Host:
    """One host: its guard, its adapter, the bans other hosts decided that it reported."""

    def __init__(self, name: str, url: str, prefix: str, config: GuardConfig = CONFIG,
                 sentinels: tuple[str, ...] = (), **kwargs: Any):  # fmt: skip
        self.guard = Guard(config, share=True)
        self.reported: list[tuple[IpBanned, str, str]] = []
        loc = SimpleNamespace(url=url, key_prefix=prefix, sentinels=sentinels, sentinel_master=MASTER_NAME)
        self.link = RedisGuardShare.from_location(
            loc, name, lambda: self.guard, lambda *a: self.reported.append(a), **kwargs
        )

    def fail(self, ip: str, user: str | None = None) -> IpBanned | None:
        """One failure, as the registrar handles it: decided, shared, a ban announced."""
        ban = self.guard.record_failure(ip, user, time.time())
        self.link.send(self.guard.take_shared())
        if ban is not None:
            self.link.announce(ban, "REGISTER")
        return ban


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with redis_namespace() as p:
        yield p


@pytest.fixture
async def hosts(prefix: str) -> AsyncIterator[Callable[..., Any]]:
    running: list[Host] = []

    async def start(name: str, url: str = REDIS_URL, **kwargs: Any) -> Host:
        host = Host(name, url, prefix, **kwargs)
        running.append(host)
        await host.link.start()
        return host

    yield start
    for host in running:
        await host.link.close()


async def test_a_ban_reaches_every_host_and_a_host_that_starts_later(prefix: str, hosts) -> None:
    a, b = await hosts("A"), await hosts("B")
    assert a.link.up and b.link.up
    source = "203.0.113.7"
    bans = [a.fail(source, "1001") for _ in range(3)]
    assert bans[-1] is not None and bans[-1].reason is BanReason.SOURCE_FAILURES  # A's own threshold
    await until(lambda: b.guard.is_banned(source, time.time()), what="B installs A's ban")
    until_b = b.guard.banned(time.time())[source]
    assert abs(until_b - bans[-1].until) < 2  # the remaining time travelled, not A's clock
    # B logs and counts it once, with its origin; A did not hear its own ban back
    [(ban, method, origin)] = b.reported
    assert (ban.source, ban.reason, ban.username, method, origin) == (
        source, BanReason.SOURCE_FAILURES, "1001", "REGISTER", "A",
    )  # fmt: skip
    assert a.reported == []
    # in Redis with its expiry: a score on Redis's clock, the key expiring with the latest ban
    client = aioredis.from_url(REDIS_URL)
    try:
        score = await client.zscore(prefix + "guard:bans", source)
        seconds, micros = await client.time()
        ttl = await client.pttl(prefix + "guard:bans")
    finally:
        await client.aclose()
    now_ms = seconds * 1000 + micros // 1000
    assert 598_000 < score - now_ms <= 600_000 and 598_000 < ttl <= 600_000
    # a host that starts now holds it before serving
    c = await hosts("C")
    assert c.guard.is_banned(source, time.time()) and c.reported == []  # loaded, not re-logged
    assert abs(c.guard.banned(time.time())[source] - bans[-1].until) < 2


async def test_failures_and_logins_add_up_across_hosts(hosts) -> None:
    a, b = await hosts("A"), await hosts("B")
    # one source guessing on both hosts: the threshold (3) holds for the sum
    assert a.fail("198.51.100.1", "x") is None and a.fail("198.51.100.1", "y") is None
    await until(lambda: b.link.received == 2, what="B counted A's failures")
    ban = b.fail("198.51.100.1", "z")
    assert ban is not None and ban.reason is BanReason.SOURCE_FAILURES
    await until(lambda: a.guard.is_banned("198.51.100.1", time.time()), what="A holds B's ban")
    # the real phone logs in on A: its source is known on B too
    a.guard.record_success("192.0.2.50", "1001", time.time())
    a.link.send(a.guard.take_shared())
    # a username guessed from fresh sources on both hosts is under attack on both (threshold 4)
    for i, host in enumerate((a, b, a, b)):
        host.fail(f"198.51.100.{10 + i}", "1001")
    for host in (a, b):
        await until(lambda h=host: h.guard.refuses_guess("198.51.100.99", "1001", time.time()),
                    what="under attack")  # fmt: skip
        assert not host.guard.refuses_guess("192.0.2.50", "1001", time.time())  # the phone still passes


async def test_exempt_sources_are_not_installed_and_a_longer_ban_stays(prefix: str, hosts) -> None:
    a = await hosts("A")
    here = GuardConfig(ip_threshold=3, slow_threshold=0, whitelist=("192.0.2.0/24",))
    b = await hosts("B", config=here, exempt=lambda ip: ip == "198.51.100.5")  # a trunk's
    now = time.time()
    for ip in ("192.0.2.9", "198.51.100.5", "198.51.100.6"):
        a.link.announce(IpBanned(ip, now + 600, BanReason.RATE), "any")
    a.link.announce(IpBanned("198.51.100.6", now + 10, BanReason.RATE), "any")  # shorter: kept long
    await until(lambda: b.guard.is_banned("198.51.100.6", time.time()), what="the banned one")
    await asyncio.sleep(0.3)  # a second publication would be in by now
    assert not b.guard.is_banned("192.0.2.9", time.time())  # whitelisted here
    assert not b.guard.is_banned("198.51.100.5", time.time())  # a trunk's here
    assert b.guard.banned(time.time())["198.51.100.6"] > now + 590
    assert b.link.received == 3  # the shorter ban was not published
    c = await hosts("C")
    assert c.guard.banned(time.time())["198.51.100.6"] > now + 590


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory, persistent=False)
    yield server
    server.kill()


async def test_redis_away_each_host_keeps_its_guard_and_a_ban_waits(hosts, private_redis) -> None:
    unreachable = await hosts("X", url="redis://127.0.0.1:1/0")  # nothing listens: start is bounded
    assert not unreachable.link.up
    assert unreachable.fail("198.51.100.1") is None  # the guard decides alone, nothing raises
    private_redis.start()
    await wait_listening(private_redis.port)
    a, b = await hosts("A", url=private_redis.url), await hosts("B", url=private_redis.url)
    private_redis.kill()
    a.fail("198.51.100.9")  # its publication fails: A knows Redis is gone
    await until(lambda: not a.link.up, what="A sees Redis gone")
    started = time.perf_counter()
    bans = [a.fail("198.51.100.2", "1001") for _ in range(3)]  # decided at once, on A alone
    assert time.perf_counter() - started < 0.05 and bans[-1] is not None
    assert a.guard.is_banned("198.51.100.2", time.time())
    assert not b.guard.is_banned("198.51.100.2", time.time())
    assert a.link.unsent >= 3  # the failures were not sent
    private_redis.start()  # empty (not persistent): the ban comes from A's wait table
    await until(lambda: b.guard.is_banned("198.51.100.2", time.time()), timeout=15,
                what="B holds the ban once Redis is back")  # fmt: skip
    assert a.link.up and not a.link._unsent


async def test_bans_follow_a_sentinel_failover(prefix: str, hosts, tmp_path: Path) -> None:
    """Through Sentinel (the location's plumbing: commands and subscription follow the master): a
    ban before and one after SENTINEL FAILOVER both reach the other host and a host started after."""
    (tmp_path / "sentinel").mkdir()
    deployment = SentinelSet(tmp_path / "sentinel")
    try:
        await deployment.start()
        sentinels = tuple(deployment.sentinel_addresses)
        a = await hosts("A", url="redis://127.0.0.1/0", sentinels=sentinels)
        b = await hosts("B", url="redis://127.0.0.1/0", sentinels=sentinels)
        assert a.link.up and b.link.up
        a.link.announce(IpBanned("198.51.100.1", time.time() + 600, BanReason.RATE), "any")
        await until(lambda: b.guard.is_banned("198.51.100.1", time.time()), what="before the failover")
        replica = aioredis.Redis(port=deployment.redis_ports[1])  # the master to be: holds the ban first
        try:
            await until(lambda: replica.zscore(prefix + "guard:bans", "198.51.100.1"), timeout=15,
                        what="the replica holds the ban")  # fmt: skip
        finally:
            await replica.aclose()
        await deployment.failover()
        await deployment.wait_master_is(deployment.redis_ports[1])
        # resent until the links follow: writes the old master took in its last moment as a master
        # are lost (registrar/location/sentinel.py), the ban as well as any other
        new_master = aioredis.Redis(port=deployment.redis_ports[1])
        deadline = time.monotonic() + 15
        try:
            while not (
                b.guard.is_banned("198.51.100.2", time.time())
                and await new_master.zscore(prefix + "guard:bans", "198.51.100.2")
            ):
                assert time.monotonic() < deadline, "after the failover"
                a.link.announce(IpBanned("198.51.100.2", time.time() + 600, BanReason.RATE), "any")
                await asyncio.sleep(0.5)
        finally:
            await new_master.aclose()
        c = await hosts("C", url="redis://127.0.0.1/0", sentinels=sentinels)
        assert {"198.51.100.1", "198.51.100.2"} <= set(c.guard.banned(time.time()))
    finally:
        deployment.stop()


async def test_bad_publications_are_dropped(hosts) -> None:
    a = await hosts("A")
    a.link.receive(b"\xc1garbage")
    a.link.receive(msgpack.packb(["B", [["f"], ["?", 1, 2], ["b", "198.51.100.1", 1000, "no such reason"]]]))
    a.link.receive(msgpack.packb(["A", [["b", "198.51.100.2", 60_000, "request rate", None, "any"]]]))
    assert a.link.malformed == 4 and a.guard.banned(time.time()) == {}  # the last was our own
