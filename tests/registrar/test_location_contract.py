"""One contract suite for every LocationStore backend (memory; the per-worker replica; Redis for real
at 127.0.0.1:6379), plus the sharing tests (two stores on one registry, a real subprocess, real TTL
expiry)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from registrar.location import (
    BindingAdded,
    BindingFlowLost,
    BindingRefreshed,
    BindingRemoved,
    ContactChange,
    Flow,
    MemoryLocationStore,
    OverflowPolicy,
    RedisLocationStore,
    RegisterChanges,
    StaleCSeqError,
    TooManyContactsError,
)
from registrar.location.fallback import FallbackLocationStore
from registrar.location.replicated import ReplicatedLocationStore
from sipcore.waiting import within

REDIS_URL = "redis://127.0.0.1:6379/0"
T0 = 1_700_000_000.0
AOR = "sip:1001@acme.example"
UDP = Flow("udp", "198.51.100.7", 5060, "203.0.113.5:5060")


def tcp(cid: str, port: int = 40000) -> Flow:
    return Flow("tcp", "198.51.100.8", port, "203.0.113.5:5070", cid)


def c(uri: str, expires: int = 3600, q: int = 1000, instance: str | None = None, reg_id: int | None = None):
    return ContactChange(uri, expires, q, instance, reg_id)


def reg(call_id: str, cseq: int, *contacts: ContactChange, flow: Flow = UDP, wildcard: bool = False):
    return RegisterChanges(call_id, cseq, flow, contacts, wildcard, user_agent="Yealink SIP-T46U")


async def _redis_client() -> aioredis.Redis:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await within(client.ping(), 2)
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc!r}")
    return client


async def _drop_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
def prefix() -> str:
    return f"test:loc:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# backends that hold the registry in this process: `lookup_cached` never answers None there
LOCAL = frozenset({"memory", "replicated"})


@pytest.fixture(params=["memory", "replicated", "redis", "redis-nocache", "redis-fallback"])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator:
    """``redis`` plans from its per-process cache of AOR states; ``redis-nocache`` reads every time;
    ``replicated`` is worker 0's replica, publishing to no other worker; ``redis-fallback`` is the Redis
    store behind its local fallback (`registrar.location.fallback`), Redis up."""
    if request.param in LOCAL:
        s = MemoryLocationStore() if request.param == "memory" else ReplicatedLocationStore(None, 0, _drop)
        yield s
        await s.close()
        return
    client = await _redis_client()
    s = RedisLocationStore.from_url(
        REDIS_URL, prefix=prefix, cache_size=0 if "nocache" in request.param else 50_000
    )
    if request.param == "redis-fallback":
        s = FallbackLocationStore(s, timeout=5.0)  # type: ignore[assignment]
    try:
        yield s
    finally:
        await s.close()
        await _drop_prefix(client, prefix)
        await client.aclose()


def _drop(payload: bytes) -> None:
    """A replica's publisher when no other worker listens."""


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return request.node.callspec.params["store"]


@pytest.fixture(params=["replicated", "redis"])
async def pair(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator:
    """Two stores on one registry, as two processes see it: two worker replicas wired to each other,
    or two Redis stores (each with its own cache) under one prefix."""
    if request.param == "replicated":
        stores: list[ReplicatedLocationStore] = []
        stores += [
            ReplicatedLocationStore(None, i, lambda payload, i=i: stores[1 - i].receive(payload))
            for i in (0, 1)
        ]
        yield request.param, stores
        return
    client = await _redis_client()
    a, b = (RedisLocationStore.from_url(REDIS_URL, prefix=prefix) for _ in range(2))
    try:
        yield request.param, [a, b]
    finally:
        await a.close()
        await b.close()
        await _drop_prefix(client, prefix)
        await client.aclose()


async def _cached_agrees(store, backend: str, aor: str, now: float) -> list:  # type: ignore[no-untyped-def]
    """`lookup_cached` is what `get` returns, or None (ask `get`); never None on a local registry."""
    cached = store.lookup_cached(aor, now)
    current = await store.get(aor, now)
    if backend in LOCAL:
        assert cached is not None
    if cached is not None:
        assert cached == current
    return current


# -- add / refresh / remove ---------------------------------------------------------------------------


async def test_add_keeps_contact_byte_exact_and_all_fields(store) -> None:
    uri = "sip:1001@198.51.100.7:5060;transport=UDP;X-Odd=Val%20ue;line=ab12?X-Hdr=a%20b&Y=c"
    ch = RegisterChanges(
        "call-1@phone",
        7,
        UDP,
        (c(uri, 600, 800, "<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>", 1),),
        user_agent="Yealink SIP-T46U 66.86",
        path=("<sip:edge1.example;lr>",),
        received="sip:198.51.100.7:5060",
    )
    result = await store.apply(AOR, ch, T0)
    assert [type(e) for e in result.events] == [BindingAdded]
    [b] = await store.get(AOR, T0 + 1)
    assert b == result.bindings[0]
    assert (b.aor, b.contact, b.expires_at, b.q, b.call_id, b.cseq) == (
        AOR,
        uri,
        T0 + 600,
        800,
        ch.call_id,
        7,
    )
    assert (b.instance, b.reg_id, b.user_agent) == (
        "<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>",
        1,
        ch.user_agent,
    )
    assert (b.path, b.received, b.flow, b.flow_alive, b.registered_at) == (
        ch.path,
        ch.received,
        UDP,
        True,
        T0,
    )
    assert b.expires_in(T0 + 100) == 500


async def test_unknown_aor_is_empty(store) -> None:
    assert await store.get("sip:nobody@acme.example", T0) == []


async def test_refresh_same_call_id_higher_cseq(store) -> None:
    await store.apply(AOR, reg("c1", 1, c("sip:1001@10.0.0.1", 60)), T0)
    result = await store.apply(AOR, reg("c1", 2, c("sip:1001@10.0.0.1", 3600)), T0 + 30)
    [ev] = result.events
    assert isinstance(ev, BindingRefreshed)
    assert ev.previous.expires_at == T0 + 60 and ev.binding.expires_at == T0 + 3630
    [b] = await store.get(AOR, T0 + 100)
    assert (b.cseq, b.expires_at, b.registered_at) == (2, T0 + 3630, T0 + 30)


@pytest.mark.parametrize("cseq", [5, 4])
async def test_same_call_id_with_stale_cseq_is_refused_500(store, cseq: int) -> None:
    await store.apply(AOR, reg("c1", 5, c("sip:1001@10.0.0.1", 60)), T0)
    with pytest.raises(StaleCSeqError) as err:
        await store.apply(AOR, reg("c1", cseq, c("sip:1001@10.0.0.1", 3600)), T0 + 1)
    assert err.value.status == 500
    [b] = await store.get(AOR, T0 + 2)
    assert (b.cseq, b.expires_at) == (5, T0 + 60)


async def test_different_call_id_replaces_whatever_its_cseq(store) -> None:
    await store.apply(AOR, reg("c1", 50, c("sip:1001@10.0.0.1", 60)), T0)
    result = await store.apply(AOR, reg("c2", 1, c("sip:1001@10.0.0.1", 120)), T0 + 1)
    assert isinstance(result.events[0], BindingRefreshed)
    [b] = await store.get(AOR, T0 + 2)
    assert (b.call_id, b.cseq, b.expires_at) == ("c2", 1, T0 + 121)


async def test_contact_matching_ignores_host_case_and_param_order(store) -> None:
    await store.apply(AOR, reg("c1", 1, c("sip:1001@PHONE.example;transport=tcp;line=x")), T0)
    await store.apply(AOR, reg("c1", 2, c("sip:1001@phone.example;line=x;Transport=TCP", 90)), T0)
    [b] = await store.get(AOR, T0)
    assert b.contact == "sip:1001@phone.example;line=x;Transport=TCP" and b.cseq == 2


async def test_outbound_instance_and_reg_id_replace_a_moved_contact(store) -> None:
    inst = "<urn:uuid:1>"
    await store.apply(AOR, reg("c1", 1, c("sip:1001@10.0.0.1:5060", instance=inst, reg_id=1)), T0)
    await store.apply(AOR, reg("c1", 2, c("sip:1001@10.0.0.9:6000", instance=inst, reg_id=2)), T0)
    await store.apply(AOR, reg("c1", 3, c("sip:1001@10.0.0.2:7000", instance=inst, reg_id=1)), T0)
    got = {(b.contact, b.reg_id) for b in await store.get(AOR, T0)}
    assert got == {("sip:1001@10.0.0.2:7000", 1), ("sip:1001@10.0.0.9:6000", 2)}


async def test_remove_with_expires_zero(store) -> None:
    await store.apply(AOR, reg("c1", 1, c("sip:1001@10.0.0.1"), c("sip:1001@10.0.0.2")), T0)
    result = await store.apply(AOR, reg("c1", 2, c("sip:1001@10.0.0.1", 0)), T0 + 1)
    [ev] = result.events
    assert isinstance(ev, BindingRemoved) and ev.reason == "unregistered"
    assert ev.binding.contact == "sip:1001@10.0.0.1"
    assert [b.contact for b in await store.get(AOR, T0 + 1)] == ["sip:1001@10.0.0.2"]
    await store.apply(AOR, reg("c1", 3, c("sip:1001@10.0.0.2", 0)), T0 + 2)
    assert await store.get(AOR, T0 + 2) == []
    assert await store.count_aors(T0 + 2) == 0 and await store.count_contacts(T0 + 2) == 0


async def test_removing_an_unknown_contact_changes_nothing(store) -> None:
    result = await store.apply(AOR, reg("c1", 1, c("sip:1001@10.0.0.1", 0)), T0)
    assert result.events == () and result.bindings == ()
    assert await store.get(AOR, T0) == []


# -- wildcard ---------------------------------------------------------------------------------------


async def test_wildcard_removes_all(store) -> None:
    await store.apply(AOR, reg("c1", 1, c("sip:1001@10.0.0.1")), T0)
    await store.apply(AOR, reg("c2", 1, c("sip:1001@10.0.0.2")), T0)
    result = await store.apply(AOR, reg("c1", 2, wildcard=True), T0 + 1)
    assert {e.reason for e in result.events} == {"wildcard"} and len(result.events) == 2
    assert await store.get(AOR, T0 + 1) == []


async def test_wildcard_checks_call_id_and_cseq_and_then_changes_nothing(store) -> None:
    await store.apply(AOR, reg("c1", 1, c("sip:1001@10.0.0.1")), T0)
    await store.apply(AOR, reg("c2", 9, c("sip:1001@10.0.0.2")), T0)
    with pytest.raises(StaleCSeqError):
        await store.apply(AOR, reg("c2", 9, wildcard=True), T0 + 1)
    assert len(await store.get(AOR, T0 + 1)) == 2


# -- atomicity, ordering, expiry ----------------------------------------------------------------------


async def test_one_refused_contact_refuses_the_whole_register(store) -> None:
    await store.apply(AOR, reg("c1", 5, c("sip:1001@10.0.0.1")), T0)
    with pytest.raises(StaleCSeqError):
        await store.apply(AOR, reg("c1", 5, c("sip:1001@10.0.0.2"), c("sip:1001@10.0.0.1", 0)), T0 + 1)
    assert [b.contact for b in await store.get(AOR, T0 + 1)] == ["sip:1001@10.0.0.1"]


async def test_ordered_by_q_then_most_recent(store) -> None:
    await store.apply(AOR, reg("a", 1, c("sip:a@10.0.0.1", q=500)), T0)
    await store.apply(AOR, reg("b", 1, c("sip:b@10.0.0.2", q=1000)), T0 + 1)
    await store.apply(AOR, reg("c", 1, c("sip:c@10.0.0.3", q=500)), T0 + 2)
    await store.apply(AOR, reg("d", 1, c("sip:d@10.0.0.4", q=0)), T0 + 3)
    order = [b.contact for b in await store.get(AOR, T0 + 4)]
    assert order == ["sip:b@10.0.0.2", "sip:c@10.0.0.3", "sip:a@10.0.0.1", "sip:d@10.0.0.4"]


async def test_expired_bindings_are_not_returned_nor_counted(store) -> None:
    await store.apply(AOR, reg("c1", 1, c("sip:1001@10.0.0.1", 60), c("sip:1001@10.0.0.2", 120)), T0)
    await store.apply("sip:1002@acme.example", reg("c9", 1, c("sip:1002@10.0.0.3", 30)), T0)
    assert len(await store.get(AOR, T0 + 59.9)) == 2
    assert [b.contact for b in await store.get(AOR, T0 + 60)] == ["sip:1001@10.0.0.2"]
    assert await store.count_contacts(T0 + 60) == 1 and await store.count_aors(T0 + 60) == 1
    assert await store.get(AOR, T0 + 120) == []
    await store.expire(T0 + 120)
    assert await store.count_contacts(T0 + 120) == 0 and await store.count_aors(T0 + 120) == 0


async def test_an_expired_binding_is_gone_for_the_cseq_rule_too(store) -> None:
    await store.apply(AOR, reg("c1", 5, c("sip:1001@10.0.0.1", 60)), T0)
    result = await store.apply(AOR, reg("c1", 1, c("sip:1001@10.0.0.1", 60)), T0 + 61)
    assert [type(e) for e in result.events] == [BindingAdded]


async def test_counts(store) -> None:
    await store.apply(AOR, reg("c1", 1, c("sip:1001@10.0.0.1"), c("sip:1001@10.0.0.2")), T0)
    await store.apply("sip:1002@acme.example", reg("c2", 1, c("sip:1002@10.0.0.3")), T0)
    assert await store.count_aors(T0) == 2 and await store.count_contacts(T0) == 3


# -- max contacts -------------------------------------------------------------------------------------


async def test_max_contacts_reject_changes_nothing(store) -> None:
    await store.apply(AOR, reg("a", 1, c("sip:a@10.0.0.1"), c("sip:b@10.0.0.2")), T0, 2)
    with pytest.raises(TooManyContactsError) as err:
        await store.apply(AOR, reg("b", 1, c("sip:c@10.0.0.3")), T0 + 1, 2, OverflowPolicy.REJECT)
    assert err.value.status == 503
    assert {b.contact for b in await store.get(AOR, T0 + 1)} == {"sip:a@10.0.0.1", "sip:b@10.0.0.2"}
    # refreshing within the limit is fine; so is swapping one contact for another in one REGISTER
    await store.apply(AOR, reg("a", 2, c("sip:a@10.0.0.1", 90)), T0 + 2, 2)
    await store.apply(AOR, reg("a", 3, c("sip:b@10.0.0.2", 0), c("sip:c@10.0.0.3")), T0 + 3, 2)
    assert {b.contact for b in await store.get(AOR, T0 + 3)} == {"sip:a@10.0.0.1", "sip:c@10.0.0.3"}


async def test_max_contacts_drop_oldest(store) -> None:
    drop = OverflowPolicy.DROP_OLDEST
    await store.apply(AOR, reg("a", 1, c("sip:a@10.0.0.1")), T0, 2, drop)
    await store.apply(AOR, reg("b", 1, c("sip:b@10.0.0.2")), T0 + 1, 2, drop)
    await store.apply(AOR, reg("a", 2, c("sip:a@10.0.0.1")), T0 + 2, 2, drop)  # a is now the newer
    result = await store.apply(AOR, reg("c", 1, c("sip:c@10.0.0.3")), T0 + 3, 2, drop)
    removed = [e for e in result.events if isinstance(e, BindingRemoved)]
    assert [(e.binding.contact, e.reason) for e in removed] == [("sip:b@10.0.0.2", "dropped")]
    assert {b.contact for b in await store.get(AOR, T0 + 3)} == {"sip:a@10.0.0.1", "sip:c@10.0.0.3"}
    with pytest.raises(TooManyContactsError):  # the REGISTER alone is over the limit
        await store.apply(AOR, reg("d", 1, *(c(f"sip:d{i}@10.0.0.9") for i in range(3))), T0 + 4, 2, drop)
    assert len(await store.get(AOR, T0 + 4)) == 2


# -- flows --------------------------------------------------------------------------------------------


async def test_closed_tcp_flow_drops_outbound_and_marks_the_rest_dead(store) -> None:
    cid = f"host1/42/{uuid.uuid4().hex[:6]}"
    await store.apply(
        AOR,
        reg("ob", 1, c("sip:ob@10.0.0.1;transport=tcp", instance="<urn:uuid:9>", reg_id=1), flow=tcp(cid)),
        T0,
    )
    await store.apply(AOR, reg("pl", 1, c("sip:pl@10.0.0.2;transport=tcp"), flow=tcp(cid, 40001)), T0)
    await store.apply(AOR, reg("ud", 1, c("sip:ud@10.0.0.3")), T0)
    events = await store.remove_flow(cid)
    assert sorted((type(e).__name__, e.binding.contact) for e in events) == [
        ("BindingFlowLost", "sip:pl@10.0.0.2;transport=tcp"),
        ("BindingRemoved", "sip:ob@10.0.0.1;transport=tcp"),
    ]
    assert next(e for e in events if isinstance(e, BindingRemoved)).reason == "flow_closed"
    alive = {b.contact: b.flow_alive for b in await store.get(AOR, T0 + 1)}
    assert alive == {"sip:pl@10.0.0.2;transport=tcp": False, "sip:ud@10.0.0.3": True}
    assert await store.remove_flow(cid) == []
    # the phone reconnects and re-registers: its flow is alive again
    await store.apply(AOR, reg("pl", 2, c("sip:pl@10.0.0.2;transport=tcp"), flow=tcp(cid + "b")), T0 + 2)
    b = next(b for b in await store.get(AOR, T0 + 2) if b.contact.startswith("sip:pl"))
    assert b.flow_alive and b.flow.connection_id == cid + "b"
    assert [type(e) for e in await store.remove_flow(cid + "b")] == [BindingFlowLost]


# -- Redis: sharing between processes, real TTL ------------------------------------------------------


async def test_two_redis_stores_share_bindings_and_serialise_races(prefix: str) -> None:
    c1 = await _redis_client()
    s1, s2 = (
        RedisLocationStore.from_url(REDIS_URL, prefix=prefix),
        RedisLocationStore.from_url(REDIS_URL, prefix=prefix),
    )
    try:
        await s1.apply(AOR, reg("x", 1, c("sip:x@10.0.0.1")), T0)
        assert [b.contact for b in await s2.get(AOR, T0)] == ["sip:x@10.0.0.1"]
        # 40 concurrent REGISTERs from both "processes", each adding its own contact: none is lost
        await asyncio.gather(
            *(
                (s1 if i % 2 else s2).apply(AOR, reg(f"r{i}", 1, c(f"sip:r{i}@10.0.0.{i}")), T0 + 1)
                for i in range(40)
            )
        )
        assert len(await s1.get(AOR, T0 + 1)) == 41
        assert await s2.count_contacts(T0 + 1) == 41
        await s2.apply(AOR, reg("x", 2, wildcard=True), T0 + 2)
        assert await s1.get(AOR, T0 + 2) == [] and await s1.count_aors(T0 + 2) == 0
    finally:
        await s1.close()
        await s2.close()
        await _drop_prefix(c1, prefix)
        await c1.aclose()


async def test_a_real_subprocess_writes_and_this_process_reads(prefix: str) -> None:
    client = await _redis_client()
    script = textwrap.dedent(
        f"""
        import asyncio
        from registrar.location import ContactChange, Flow, RedisLocationStore, RegisterChanges

        async def main():
            s = RedisLocationStore.from_url({REDIS_URL!r}, prefix={prefix!r})
            flow = Flow("tcp", "198.51.100.9", 41000, "203.0.113.5:5070", "hostB/7/1")
            ch = RegisterChanges("sub-1", 1, flow, (ContactChange("sip:1001@10.9.9.9;ob", 300, 700),))
            await s.apply({AOR!r}, ch, {T0!r})
            await s.close()

        asyncio.run(main())
        """
    )
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        store = RedisLocationStore.from_url(REDIS_URL, prefix=prefix)
        [b] = await store.get(AOR, T0 + 1)
        assert (b.contact, b.q, b.call_id, b.flow.connection_id) == (
            "sip:1001@10.9.9.9;ob",
            700,
            "sub-1",
            "hostB/7/1",
        )
        assert [type(e) for e in await store.remove_flow("hostB/7/1")] == [BindingFlowLost]
        await store.close()
    finally:
        await _drop_prefix(client, prefix)
        await client.aclose()


async def test_redis_drops_expired_aors_by_itself(prefix: str) -> None:
    client = await _redis_client()
    store = RedisLocationStore.from_url(REDIS_URL, prefix=prefix, ttl_margin=0.2)
    now = time.time()
    try:
        await store.apply(AOR, reg("c1", 1, c("sip:1001@10.0.0.1", 1)), now)
        await store.apply("sip:keep@acme.example", reg("c2", 1, c("sip:k@10.0.0.2", 60)), now)
        key = f"{prefix}:aor:{AOR}"
        assert await client.exists(key) == 1
        assert 0 < await client.pttl(key) <= 1200
        await asyncio.sleep(1.5)  # the suite's one real wait: TTL 1 s + 0.2 s margin
        assert await client.exists(key) == 0
        assert await store.get(AOR, time.time()) == []
        assert await client.exists(f"{prefix}:aor:sip:keep@acme.example") == 1
    finally:
        await store.close()
        await _drop_prefix(client, prefix)
        await client.aclose()


async def test_one_connection_serving_several_aors(store) -> None:
    cid = f"host1/43/{uuid.uuid4().hex[:6]}"
    other = "sip:1002@acme.example"
    await store.apply(AOR, reg("a", 1, c("sip:a@10.0.0.1;transport=tcp"), flow=tcp(cid)), T0)
    await store.apply(other, reg("b", 1, c("sip:b@10.0.0.1;transport=tcp"), flow=tcp(cid)), T0)
    await store.apply(AOR, reg("a", 2, c("sip:a@10.0.0.1;transport=tcp"), flow=tcp(cid)), T0 + 1)
    events = await store.remove_flow(cid)
    assert sorted(e.binding.aor for e in events) == sorted([AOR, other])
    assert not (await store.get(other, T0 + 2))[0].flow_alive


# -- lookup_cached: read without I/O only what the store can vouch for --------------------------------


async def test_lookup_cached_answers_what_get_answers_or_none(store, backend: str) -> None:
    other = "sip:1002@acme.example"
    assert await _cached_agrees(store, backend, AOR, T0) == []
    await store.apply(AOR, reg("a", 1, c("sip:a@10.0.0.1", 60), c("sip:b@10.0.0.2", 600, 500)), T0)
    await store.apply(other, reg("o", 1, c("sip:o@10.0.0.3")), T0)
    assert [b.contact for b in await _cached_agrees(store, backend, AOR, T0 + 1)] == [
        "sip:a@10.0.0.1",
        "sip:b@10.0.0.2",
    ]
    # one binding expired (nobody swept), then one removed
    assert [b.contact for b in await _cached_agrees(store, backend, AOR, T0 + 61)] == ["sip:b@10.0.0.2"]
    await store.apply(AOR, reg("a", 2, c("sip:b@10.0.0.2", 0)), T0 + 62)
    assert await _cached_agrees(store, backend, AOR, T0 + 62) == []
    assert len(await _cached_agrees(store, backend, other, T0 + 62)) == 1


async def test_lookup_cached_is_never_stale_when_another_process_wrote(pair) -> None:  # type: ignore[no-untyped-def]
    backend, (a, b) = pair
    await a.apply(AOR, reg("x", 1, c("sip:x@10.0.0.1")), T0)
    assert [x.contact for x in await _cached_agrees(a, backend, AOR, T0)] == ["sip:x@10.0.0.1"]
    # the other process replaces the binding: what ``a`` last saw is now wrong
    await b.apply(AOR, reg("x", 2, c("sip:x@10.0.0.1", 0), c("sip:y@10.0.0.2")), T0 + 1)
    assert [x.contact for x in await _cached_agrees(a, backend, AOR, T0 + 1)] == ["sip:y@10.0.0.2"]
    assert [x.contact for x in await _cached_agrees(b, backend, AOR, T0 + 1)] == ["sip:y@10.0.0.2"]


async def test_apply_now_is_apply_here_or_none(store, backend: str) -> None:
    """`apply_now` applies without I/O where the registry is local (same result and state as
    `apply`), and answers None elsewhere having changed nothing; it refuses as `apply` refuses."""
    result = store.apply_now(AOR, reg("n", 1, c("sip:n@10.0.0.1")), T0)
    if backend not in LOCAL:
        assert result is None
        assert await store.get(AOR, T0) == []
        assert store.remove_flow_now("host1/1/x") is None
        assert await store.open(T0) == 0
        return
    assert result is not None and [b.contact for b in result.bindings] == ["sip:n@10.0.0.1"]
    assert [b.contact for b in await store.get(AOR, T0)] == ["sip:n@10.0.0.1"]
    with pytest.raises(StaleCSeqError):
        store.apply_now(AOR, reg("n", 1, c("sip:n@10.0.0.1")), T0 + 1)
    cid = f"host1/42/{uuid.uuid4().hex[:6]}"
    store.apply_now(AOR, reg("t", 1, c("sip:t@10.0.0.2;transport=tcp", instance="<urn:uuid:1>", reg_id=1),
                             flow=tcp(cid)), T0)  # fmt: skip
    events = store.remove_flow_now(cid)
    assert [type(e) for e in events] == [BindingRemoved]
    assert [b.contact for b in await store.get(AOR, T0)] == ["sip:n@10.0.0.1"]
