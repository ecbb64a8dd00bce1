"""The Redis location store's local fallback (`registrar.location.fallback`) against the real Redis at
127.0.0.1:6379 behind a TCP proxy the test cuts or stalls: REGISTERs and lookups go on from the local
view while Redis is away, and the changes are merged back when it answers (newest registration wins,
removals kept, expiry respected). Plus the pure merge (`registrar.location.merge`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from registrar.location import ContactChange, Flow, RedisLocationStore, RegisterChanges
from registrar.location.binding import Binding
from registrar.location.fallback import FallbackLocationStore
from registrar.location.merge import merge_written_back
from registrar.location.resp import RespClient
from sipcore.waiting import within
from tests.cdr.helpers import TcpProxy, wait_until

pytestmark = pytest.mark.timeout(60)

AOR = "sip:1001@acme.example"
UDP = Flow("udp", "198.51.100.7", 5060, "203.0.113.5:5060")


def reg(call_id: str, cseq: int, uri: str, expires: int = 600) -> RegisterChanges:
    return RegisterChanges(call_id, cseq, UDP, (ContactChange(uri, expires),))


def binding(uri: str, call_id: str, cseq: int, at: float, expires_at: float | None = None) -> Binding:
    return Binding(AOR, uri, expires_at or at + 600, 1000, call_id, cseq, UDP, at)


# -- the pure merge --------------------------------------------------------------------------------


def test_merge_keeps_the_newest_registration_of_each_contact() -> None:
    now = 1000.0
    remote_old = binding("sip:a@1.1.1.1", "c1", 5, 900)
    local_newer_cseq = binding("sip:a@1.1.1.1", "c1", 6, 950)
    assert merge_written_back([remote_old], {remote_old.key: local_newer_cseq}, {}, now) == (
        local_newer_cseq,
    )
    # same Call-ID: CSeq decides, whatever the clocks say
    local_lower = binding("sip:a@1.1.1.1", "c1", 4, 990)
    assert merge_written_back([remote_old], {remote_old.key: local_lower}, {}, now) == (remote_old,)
    # another Call-ID (the phone rebooted, or registered through another host): the later one wins
    other_host = binding("sip:a@1.1.1.1", "c2", 1, 980)
    assert merge_written_back([other_host], {other_host.key: local_newer_cseq}, {}, now) == (other_host,)


def test_merge_applies_removals_unless_redis_holds_a_newer_registration() -> None:
    now = 1000.0
    old = binding("sip:a@1.1.1.1", "c1", 1, 900)
    assert merge_written_back([old], {}, {old.key: 950.0}, now) == ()
    newer = binding("sip:a@1.1.1.1", "c2", 1, 970)
    assert merge_written_back([newer], {}, {newer.key: 950.0}, now) == (newer,)


def test_merge_writes_back_nothing_expired() -> None:
    now = 1000.0
    gone = binding("sip:b@1.1.1.1", "c1", 1, 300, expires_at=999.0)
    kept = binding("sip:c@1.1.1.1", "c1", 2, 300, expires_at=1001.0)
    stale_remote = binding("sip:d@1.1.1.1", "c9", 1, 100, expires_at=500.0)
    merged = merge_written_back([stale_remote], {gone.key: gone, kept.key: kept}, {}, now)
    assert merged == (kept,)


# -- against Redis ---------------------------------------------------------------------------------


class StallingProxy(TcpProxy):
    """`TcpProxy` that can also hold every byte (Redis alive but not answering) until released."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, uw}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await r.read(65536):
                    await self.flowing.wait()
                    w.write(data)
                    await w.drain()
            w.transport.abort()

        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
        self._writers -= {writer, uw}


@pytest.fixture
async def setup() -> AsyncIterator[tuple[StallingProxy, FallbackLocationStore, RedisLocationStore]]:
    direct = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        await within(direct.ping(), 2)
    except Exception as exc:
        await direct.aclose()
        pytest.skip(f"Redis unreachable: {exc!r}")
    prefix = f"test:fb:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    proxy = StallingProxy("127.0.0.1", 6379)
    await proxy.start()
    client = RespClient.from_url(f"redis://127.0.0.1:{proxy.port}/0", timeout=1.0)
    store = FallbackLocationStore(RedisLocationStore(client, prefix=prefix, owns_client=True),
                                  timeout=0.3, retry_interval=0.1)  # fmt: skip
    other = RedisLocationStore.from_url("redis://127.0.0.1:6379/0", prefix=prefix)  # another host, never cut
    try:
        yield proxy, store, other
    finally:
        proxy.flowing.set()
        await proxy.cut()
        await store.close()
        await other.close()
        keys = [k async for k in direct.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await direct.delete(*keys)
        await direct.aclose()


async def test_registrations_during_a_cut_are_served_locally_and_merged_back(setup) -> None:
    proxy, store, other = setup
    now = time.time()
    await store.apply(AOR, reg("c1", 1, "sip:desk@10.0.0.1"), now)
    await store.apply(AOR, reg("c2", 1, "sip:old@10.0.0.2"), now)
    await store.apply(AOR, reg("c3", 1, "sip:shared@10.0.0.3"), now)
    assert store.up and len(await other.get(AOR, now)) == 3

    await proxy.cut()
    now = time.time()
    added = await store.apply(AOR, reg("c4", 1, "sip:mobile@10.0.0.4"), now)  # a new phone: 200 locally
    assert not store.up and len(added.bindings) == 4
    await store.apply(AOR, reg("c2", 2, "sip:old@10.0.0.2", expires=0), now)  # an unregistration
    await store.apply(AOR, reg("c3", 2, "sip:shared@10.0.0.3"), now)  # a refresh
    # meanwhile another host refreshes the shared contact later (newer registration in Redis)
    await other.apply(AOR, reg("c3-elsewhere", 7, "sip:shared@10.0.0.3"), now + 1)
    seen = store.lookup_cached(AOR, now)  # down: answered from the local view at once
    assert seen is not None and {b.contact for b in seen} == {"sip:desk@10.0.0.1", "sip:mobile@10.0.0.4",
                                                              "sip:shared@10.0.0.3"}  # fmt: skip
    assert {b.contact for b in await store.get(AOR, now)} == {b.contact for b in seen}

    await proxy.start()  # Redis back: the probe writes the AOR back

    async def up() -> bool:
        return store.up

    await wait_until(up, timeout=10)
    final = {b.contact: b for b in await other.get(AOR, time.time())}
    assert set(final) == {"sip:desk@10.0.0.1", "sip:mobile@10.0.0.4", "sip:shared@10.0.0.3"}
    assert final["sip:shared@10.0.0.3"].call_id == "c3-elsewhere"  # the newer registration won
    assert store.dirty == {}
    assert store.lookup_cached(AOR, time.time()) is None  # up again: Redis is the truth


@pytest.mark.parametrize("deadline", [0.3, None])
async def test_a_stalled_redis_is_timed_out_and_caught_up(setup, deadline: float | None) -> None:
    """Redis alive but silent: the REGISTER is answered by the deadline -- the store's own
    (``timeout``), or, with None as the server runs it, the client's watchdog (its 1 s)."""
    proxy, _, other = setup
    client = RespClient.from_url(f"redis://127.0.0.1:{proxy.port}/0", timeout=1.0)
    store = FallbackLocationStore(RedisLocationStore(client, prefix=other.prefix, owns_client=True),
                                  timeout=deadline, retry_interval=0.1)  # fmt: skip
    try:
        now = time.time()
        await store.apply(AOR, reg("c1", 1, "sip:desk@10.0.0.1"), now)
        proxy.flowing.clear()
        # answered by the deadline (the stall lasts until released below: a wait would hang the test)
        result = await store.apply(AOR, reg("c2", 1, "sip:mobile@10.0.0.4"), time.time())
        assert not store.up and len(result.bindings) == 2
        proxy.flowing.set()

        async def written() -> bool:
            return store.up and len(await other.get(AOR, time.time())) == 2

        await wait_until(written, timeout=15)
    finally:
        proxy.flowing.set()
        await store.close()
