"""Redis backend beyond the shared contract: its per-process cache of AOR states is only a guess
(another process's writes always win), one round trip per refresh, real races between processes, and
a Redis restart (connection lost, script cache empty)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from registrar.location import (
    BindingAdded,
    BindingRefreshed,
    BindingRemoved,
    ContactChange,
    Flow,
    RedisLocationStore,
    RegisterChanges,
    StaleCSeqError,
    TooManyContactsError,
)
from registrar.location.resp import RespClient
from sipcore.waiting import within

REDIS_URL = "redis://127.0.0.1:6379/0"
T0 = 1_700_000_000.0
AOR = "sip:1001@acme.example"
UDP = Flow("udp", "198.51.100.7", 5060, "203.0.113.5:5060")
ROOT = Path(__file__).resolve().parents[2]


def reg(call_id: str, cseq: int, *contacts: tuple[str, int]) -> RegisterChanges:
    return RegisterChanges(call_id, cseq, UDP, tuple(ContactChange(u, e) for u, e in contacts))


class CountingClient(RespClient):
    """Records the command name of every request: one request is one round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def call(self, *args: Any) -> Any:
        self.sent.append(str(args[0]))
        return super().call(*args)


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await within(client.ping(), 2)
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc!r}")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    p = f"test:locr:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    yield p
    keys = [k async for k in redis_client.scan_iter(match=f"{p}:*", count=500)]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
async def two(prefix: str) -> AsyncIterator[tuple[RedisLocationStore, RedisLocationStore]]:
    """Two stores on their own connections: two server processes sharing the registry."""
    a = RedisLocationStore.from_url(REDIS_URL, prefix=prefix)
    b = RedisLocationStore.from_url(REDIS_URL, prefix=prefix)
    yield a, b
    await a.close()
    await b.close()


# -- the cache is a guess, never an answer --------------------------------------------------------------


async def test_a_refresh_planned_from_a_stale_state_keeps_the_other_process_binding(two) -> None:
    a, b = two
    await a.apply(AOR, reg("pa", 1, ("sip:a@10.0.0.1", 3600)), T0)  # a now remembers one binding
    await b.apply(AOR, reg("pb", 1, ("sip:b@10.0.0.2", 3600)), T0)
    result = await a.apply(AOR, reg("pa", 2, ("sip:a@10.0.0.1", 1800)), T0 + 1)
    assert [type(e) for e in result.events] == [BindingRefreshed]
    assert {x.contact for x in result.bindings} == {"sip:a@10.0.0.1", "sip:b@10.0.0.2"}
    assert {(x.contact, x.cseq) for x in await b.get(AOR, T0 + 1)} == {
        ("sip:a@10.0.0.1", 2),
        ("sip:b@10.0.0.2", 1),
    }
    assert await b.count_contacts(T0 + 1) == 2


async def test_a_stale_cseq_refusal_from_the_cache_is_checked_against_redis(two) -> None:
    a, b = two
    await a.apply(AOR, reg("c1", 5, ("sip:a@10.0.0.1", 3600)), T0)
    await b.apply(AOR, reg("c9", 1, ("sip:a@10.0.0.1", 0)), T0)  # another process unregistered it
    # a's memory says "Call-ID c1 at CSeq 5": refused there, but Redis has no such binding any more
    result = await a.apply(AOR, reg("c1", 3, ("sip:a@10.0.0.1", 3600)), T0 + 1)
    assert [type(e) for e in result.events] == [BindingAdded]
    with pytest.raises(StaleCSeqError):  # and a real stale CSeq is still refused
        await b.apply(AOR, reg("c1", 3, ("sip:a@10.0.0.1", 60)), T0 + 2)


async def test_a_contact_limit_refusal_from_the_cache_is_checked_against_redis(two) -> None:
    a, b = two
    await a.apply(AOR, reg("c1", 1, ("sip:a@10.0.0.1", 3600), ("sip:b@10.0.0.2", 3600)), T0, 2)
    await b.apply(AOR, reg("c1", 2, ("sip:b@10.0.0.2", 0)), T0)
    result = await a.apply(AOR, reg("c2", 1, ("sip:c@10.0.0.3", 3600)), T0 + 1, 2)
    assert {x.contact for x in result.bindings} == {"sip:a@10.0.0.1", "sip:c@10.0.0.3"}
    with pytest.raises(TooManyContactsError):
        await a.apply(AOR, reg("c3", 1, ("sip:d@10.0.0.4", 3600)), T0 + 2, 2)


async def test_a_removal_the_cache_thinks_is_a_no_op_still_removes(two) -> None:
    a, b = two
    await a.apply(AOR, reg("c1", 1, ("sip:a@10.0.0.1", 3600)), T0)
    await b.apply(AOR, reg("c2", 1, ("sip:b@10.0.0.2", 3600)), T0)  # a has not seen this one
    result = await a.apply(AOR, reg("c2", 2, ("sip:b@10.0.0.2", 0)), T0 + 1)
    assert [(type(e), e.binding.contact) for e in result.events] == [(BindingRemoved, "sip:b@10.0.0.2")]
    assert [x.contact for x in await b.get(AOR, T0 + 1)] == ["sip:a@10.0.0.1"]


async def test_an_aor_gone_from_redis_is_not_resurrected_from_the_cache(two, redis_client, prefix) -> None:
    a, _ = two
    await a.apply(AOR, reg("c1", 1, ("sip:a@10.0.0.1", 3600), ("sip:b@10.0.0.2", 3600)), T0)
    await redis_client.delete(f"{prefix}:aor:{AOR}")  # as when its TTL ran out
    result = await a.apply(AOR, reg("c1", 2, ("sip:a@10.0.0.1", 3600)), T0 + 1)
    assert [type(e) for e in result.events] == [BindingAdded]
    assert [x.contact for x in await a.get(AOR, T0 + 1)] == ["sip:a@10.0.0.1"]


async def test_a_cache_of_one_aor_serves_many_aors(prefix: str) -> None:
    s = RedisLocationStore.from_url(REDIS_URL, prefix=prefix, cache_size=1)
    try:
        aors = [f"sip:{i}@acme.example" for i in range(5)]
        for i, aor in enumerate(aors):
            await s.apply(aor, reg(f"c{i}", 1, (f"sip:{i}@10.0.0.{i}", 3600)), T0)
        for i, aor in enumerate(aors):
            result = await s.apply(aor, reg(f"c{i}", 2, (f"sip:{i}@10.0.0.{i}", 3600)), T0 + 1)
            assert [type(e) for e in result.events] == [BindingRefreshed]
        assert await s.count_aors(T0 + 1) == 5 and await s.count_contacts(T0 + 1) == 5
    finally:
        await s.close()


# -- round trips ----------------------------------------------------------------------------------------


async def test_round_trips_per_apply(prefix: str) -> None:
    """New AOR and refresh through the same process: one request each. After another process wrote:
    two (the compare-and-set answers with the current state, then the retry)."""
    client = CountingClient.from_url(REDIS_URL)
    s = RedisLocationStore(client, prefix=prefix)
    other = RedisLocationStore.from_url(REDIS_URL, prefix=prefix)
    try:
        await s.count_aors(T0)  # connect; the script is loaded on first use (NOSCRIPT, SCRIPT LOAD)
        await s.apply("sip:warm@acme.example", reg("w", 1, ("sip:w@10.0.0.9", 60)), T0)
        client.sent.clear()
        await s.apply(AOR, reg("c1", 1, ("sip:a@10.0.0.1", 3600)), T0)
        assert client.sent == ["EVALSHA"]
        client.sent.clear()
        await s.apply(AOR, reg("c1", 2, ("sip:a@10.0.0.1", 3600)), T0 + 1)
        assert client.sent == ["EVALSHA"]
        await other.apply(AOR, reg("c2", 1, ("sip:b@10.0.0.2", 3600)), T0 + 2)
        client.sent.clear()
        result = await s.apply(AOR, reg("c1", 3, ("sip:a@10.0.0.1", 3600)), T0 + 3)
        assert client.sent == ["EVALSHA", "EVALSHA"] and len(result.bindings) == 2
        client.sent.clear()
        assert len(await s.get(AOR, T0 + 3)) == 2 and client.sent == ["HGETALL"]
    finally:
        await s.close()
        await client.close()
        await other.close()


# -- real processes racing ------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import asyncio, json, sys
    from registrar.location import ContactChange, Flow, LocationError, RedisLocationStore, RegisterChanges

    async def main(url, prefix, aor, tag, n, limit):
        s = RedisLocationStore.from_url(url, prefix=prefix)
        flow = Flow("udp", "198.51.100.9", 5060, "203.0.113.5:5060")
        while not await s._r.call("EXISTS", prefix + ":go"):  # start together with the other writer
            await asyncio.sleep(0.005)

        async def one(i):
            contact = f"sip:{tag}{i}@10.0.0.1"
            ch = RegisterChanges(f"{tag}-{i}", 1, flow, (ContactChange(contact, 3600),))
            try:
                await s.apply(aor, ch, 1.7e9, limit)
                return contact
            except LocationError:
                return None

        done = await asyncio.gather(*(one(i) for i in range(n)))
        print(json.dumps([c for c in done if c]))
        await s.close()

    asyncio.run(main(*sys.argv[1:5], int(sys.argv[5]), int(sys.argv[6])))
    """
)


@pytest.mark.parametrize("limit", [0, 7])
async def test_two_processes_racing_on_one_aor_lose_no_binding(prefix: str, redis_client, limit: int) -> None:
    """Each process sends 20 concurrent REGISTERs adding its own contact to one AOR. Every accepted
    contact is stored; with a contact limit exactly ``limit`` are accepted (a lost update would let
    both processes see room for the same last slot)."""
    n = 20
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, REDIS_URL, prefix, AOR, tag, str(n), str(limit)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p", "q")
    ]
    accepted: set[str] = set()
    try:
        await redis_client.set(f"{prefix}:go", 1)
        for p in procs:
            out, err = await asyncio.to_thread(p.communicate, timeout=60)
            assert p.returncode == 0, err
            accepted |= set(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert len(accepted) == (limit or 2 * n)
    s = RedisLocationStore.from_url(REDIS_URL, prefix=prefix)
    try:
        assert {b.contact for b in await s.get(AOR, 1.7e9 + 1)} == accepted
        assert await s.count_contacts(1.7e9 + 1) == len(accepted)
    finally:
        await s.close()


# -- Redis restarted ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _wait_listening(port: int) -> None:
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"redis-server did not listen on {port}")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, Any]]:
    """A redis-server of this test's own (no persistence), which the test may kill and restart."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    procs: list[subprocess.Popen] = []

    def start() -> None:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        procs.append(subprocess.Popen([*args, "--dir", str(tmp_path)], stdout=subprocess.DEVNULL))

    def kill() -> None:
        procs[-1].kill()
        procs[-1].wait()

    start()
    yield port, (start, kill)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


async def test_a_restarted_redis_is_reconnected_and_its_empty_script_cache_refilled(private_redis) -> None:
    port, (start, kill) = private_redis
    await _wait_listening(port)
    s = RedisLocationStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="t")
    try:
        await s.apply(AOR, reg("c1", 1, ("sip:a@10.0.0.1", 3600)), T0)
        kill()
        with pytest.raises(ConnectionError):  # Redis down: an error to answer 500 with, not a hang
            await s.get(AOR, T0)
        start()
        await _wait_listening(port)
        # a fresh Redis: no data and no scripts; the store reconnects, reloads its script and sees
        # the AOR as new, whatever it remembered
        result = await s.apply(AOR, reg("c1", 2, ("sip:a@10.0.0.1", 3600)), T0 + 1)
        assert [type(e) for e in result.events] == [BindingAdded]
        assert [(b.contact, b.cseq) for b in await s.get(AOR, T0 + 1)] == [("sip:a@10.0.0.1", 2)]
    finally:
        await s.close()
