"""Account state (calls in progress, forwarding set by phone) seen alike by every process: the pure
cores, the worker replicas over real worker-channel socketpairs, and the Redis backend on a real
Redis (a key prefix per test)."""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from routing.feature_codes import ForwardingChange
from routing.forwarding_store import FILE_NAME, JsonForwardingStore
from routing.model import ForwardKind
from server.account_state import CallCounts, ForwardingView, LocalAccountState
from server.account_state_factory import build_account_state
from server.account_state_redis import RedisAccountState
from server.account_state_replicated import ReplicatedAccountState, encode_calls
from server.worker import Worker
from server.worker_channel import Channel, encode_account, make_inboxes

REDIS_URL = "redis://127.0.0.1:6379/0"
BUSY = ForwardKind("busy")
ALWAYS = ForwardKind("permanent")


async def until(check: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Wait until ``check()`` (or the awaitable it returns) is true, polled; fail after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what}")
        await asyncio.sleep(0.01)


# ---- pure cores --------------------------------------------------------------------------------------
def test_call_counts_sum_each_counters_own_absolute_values() -> None:
    counts = CallCounts()
    assert counts.add(0, "a", 1) == 1 and counts.add(0, "a", 1) == 2
    counts.set(1, "a", 1)
    counts.set(1, "a", 1)  # the same report twice changes nothing
    assert counts.total("a") == 3
    counts.replace(1, {"a": 0, "b": 2})
    assert counts.totals() == {"a": 2, "b": 2}
    counts.drop(1)  # a counter that is gone is forgotten whole
    assert counts.totals() == {"a": 2} and counts.counters() == {0}
    assert counts.add(0, "a", -5) == 0  # never below zero
    assert counts.totals() == {} and counts.total("a") == 0


def test_forwarding_views_converge_whatever_the_order() -> None:
    first = ForwardingChange("c/1001", BUSY, "1003")
    second = ForwardingChange("c/1001", BUSY, "1005")
    a, b = ForwardingView({}), ForwardingView({})
    assert a.apply(first, (1, 0)) and a.apply(second, (1, 1))
    assert b.apply(second, (1, 1)) and not b.apply(first, (1, 0))  # older: not taken
    assert a.snapshot() == b.snapshot() == {"c/1001": {BUSY: "1005"}}
    a.force(ForwardingChange("c/1001", BUSY, None))  # our own, before its stamp is known
    assert a.snapshot()["c/1001"][BUSY] is None
    assert a.apply(ForwardingChange("c/1001", BUSY, "1007"), (2, 0))  # any newer change wins over it


def test_local_account_state_counts_and_persists(tmp_path: Path) -> None:
    state = LocalAccountState(JsonForwardingStore.in_state_dir(tmp_path))
    state.call_started("c/1")
    state.call_started("c/1")
    state.call_ended("c/1")
    assert state.calls_of("c/1") == 1 and state.busy_accounts() == {"c/1": 1}
    state.apply_forwarding(ForwardingChange("c/1", BUSY, "2"))
    assert JsonForwardingStore(tmp_path / FILE_NAME).snapshot() == {"c/1": {BUSY: "2"}}


# ---- replicas over the worker channel ----------------------------------------------------------------
@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    """Two workers joined by real socketpairs (as the master makes them), frames dispatched by
    `Worker.on_frame`; their account state is built by the factory, as the application does."""
    inboxes = make_inboxes(2)
    channels = [Channel(inboxes[i][0], {1 - i: inboxes[1 - i][1]}) for i in range(2)]
    out = [Worker(i, 2, "node", channels[i]) for i in range(2)]
    yield out
    for worker in out:
        worker.channel.close()


def config(state_dir: Path, location: str = "memory", prefix: str = "") -> SimpleNamespace:
    loc = SimpleNamespace(
        backend=location, url=REDIS_URL, key_prefix=prefix, sentinels=(), sentinel_master="mymaster"
    )
    return SimpleNamespace(
        registrar=SimpleNamespace(location=loc), paths=SimpleNamespace(state_dir=state_dir)
    )


async def test_replicas_count_across_workers_and_take_forwarding_from_either(
    tmp_path: Path, workers: list[Worker]
) -> None:
    for worker in workers:
        worker.channel.start()
    a, b = (build_account_state(config(tmp_path), w) for w in workers)
    assert isinstance(a, ReplicatedAccountState) and workers[1].accounts is b
    a.call_started("c/1001")
    b.call_started("c/1001")
    b.call_started("c/1002")
    await until(lambda: a.calls_of("c/1001") == b.calls_of("c/1001") == 2, what="both counts everywhere")
    await until(lambda: a.calls_of("c/1002") == 1)
    b.call_ended("c/1001")
    b.call_ended("c/1002")
    await until(lambda: a.busy_accounts() == b.busy_accounts() == {"c/1001": 1}, what="ends replicated")

    # Set in worker 1: worker 0 takes it and is the one that writes the file.
    b.apply_forwarding(ForwardingChange("c/1001", BUSY, "1003"))
    assert b.overrides() == {"c/1001": {BUSY: "1003"}}  # at once where it was taken
    file = tmp_path / FILE_NAME
    await until(lambda: a.overrides() == b.overrides() and file.exists(), what="forwarding replicated")
    assert JsonForwardingStore(file).snapshot() == {"c/1001": {BUSY: "1003"}}
    # Two changes of one account in two workers at once end the same in both (and in the file).
    a.apply_forwarding(ForwardingChange("c/1001", BUSY, "1005"))
    b.apply_forwarding(ForwardingChange("c/1001", BUSY, "1007"))
    await until(lambda: a.overrides() == b.overrides(), what="converged")
    assert a.overrides()["c/1001"][BUSY] in ("1005", "1007")
    assert JsonForwardingStore(file).snapshot() == a.overrides()
    # A restarted server loads the file in every worker.
    restarted = build_account_state(config(tmp_path), workers[1])
    assert restarted.overrides() == a.overrides()


async def test_the_periodic_table_repairs_a_lost_count(workers: list[Worker]) -> None:
    for worker in workers:
        worker.channel.start()
    connected = False

    def publish(payload: bytes, at_once: bool) -> None:
        if connected:
            workers[0].channel.broadcast(encode_account(payload), at_once)

    a = ReplicatedAccountState(0, publish, {}, report_interval=0.05)
    b = workers[1].account_state({}, None)
    # worker 1 missed a count frame (dropped) and holds a stale one: the next table fixes both
    b.receive(encode_calls(0, "c/9", 3))
    a.call_started("c/1")
    assert b.busy_accounts() == {"c/9": 3}
    connected = True
    await a.start()
    try:
        await until(lambda: b.busy_accounts() == {"c/1": 1}, what="table replaced worker 0's counts")
    finally:
        await a.close()


def test_an_unreadable_account_message_is_dropped() -> None:
    state = ReplicatedAccountState(1, lambda payload, now: None, {})
    state.receive(b"\xc1garbage")
    state.receive(msgpack.packb([9, 0]))
    assert state.busy_accounts() == {} and state.overrides() == {}


# ---- Redis ---------------------------------------------------------------------------------------------
@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        await client.aclose()
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc!r}")
    p = f"sipcore-acct-test-{secrets.token_hex(6)}:"
    yield p
    keys = [k async for k in client.scan_iter(match=p + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def processes(prefix: str) -> AsyncIterator[Callable[..., object]]:
    """Start a "process" (its own id, clients and mirror); all still running are closed at the end."""
    running: list[RedisAccountState] = []

    async def start(name: str, **kwargs: Any) -> RedisAccountState:
        state = RedisAccountState.from_url(REDIS_URL, prefix, process=name, **kwargs)
        await state.start()
        assert state.up
        running.append(state)
        return state

    yield start
    for state in running:
        if state._tasks:
            await state.close()


@pytest.mark.redis
async def test_redis_counts_are_shared_and_forwarding_is_durable(prefix: str, processes) -> None:
    a, b = await processes("host-a/1"), await processes("host-b/2")
    a.call_started("c/1001")
    b.call_started("c/1001")
    await until(lambda: a.calls_of("c/1001") == b.calls_of("c/1001") == 2, what="counts shared")
    a.call_ended("c/1001")
    await until(lambda: b.calls_of("c/1001") == 1, what="end shared")

    b.apply_forwarding(ForwardingChange("c/1001", BUSY, "1003"))
    assert b.overrides() == {"c/1001": {BUSY: "1003"}}
    await until(lambda: a.overrides() == {"c/1001": {BUSY: "1003"}}, what="forwarding published")
    a.apply_forwarding(ForwardingChange("c/1001", ALWAYS, None))
    b.apply_forwarding(ForwardingChange("c/1001", BUSY, "1005"))
    a.apply_forwarding(ForwardingChange("c/1001", BUSY, "1007"))
    await until(
        lambda: a.overrides() == b.overrides() and len(a.overrides()["c/1001"]) == 2, what="converged"
    )
    final = a.overrides()
    await a.close()
    await b.close()
    # sipcore restarted: Redis is the truth; nothing of the stopped processes' calls is counted
    c = await processes("host-a/3")
    assert c.overrides() == final and c.busy_accounts() == {}


@pytest.mark.redis
async def test_forwarding_set_before_the_switch_to_redis_is_imported_once(prefix: str, processes) -> None:
    """A host moving from memory backends to Redis brings what phones set (its forwarding.json) into
    a Redis that never held forwarding; once Redis has any, another host's file does not override it."""
    first = await processes("host-a/1", seed={"c/1001": {BUSY: "1003"}, "c/1002": {ALWAYS: None}})
    assert first.overrides() == {"c/1001": {BUSY: "1003"}, "c/1002": {ALWAYS: None}}
    late = await processes("host-b/2", seed={"c/1001": {BUSY: "1009"}})
    await until(lambda: late.overrides() == first.overrides(), what="the first import is the truth")
    assert late.overrides()["c/1001"] == {BUSY: "1003"}


@pytest.mark.redis
async def test_a_dead_host_stops_counting_and_a_clean_stop_at_once(prefix: str, processes) -> None:
    dead = await processes("host-dead/1", ttl=0.5, refresh_interval=0.1)
    stopped = await processes("host-stopped/2")
    alive = await processes("host-alive/3", refresh_interval=0.1)
    dead.call_started("c/1")
    stopped.call_started("c/1")
    await until(lambda: alive.calls_of("c/1") == 2, what="both counted")
    for task in dead._tasks:  # the host dies: no refresh, no clean stop
        task.cancel()
    await stopped.close()
    await until(lambda: alive.calls_of("c/1") == 1, timeout=1.0, what="a clean stop is seen at once")
    await until(lambda: alive.calls_of("c/1") == 0, timeout=3.0, what="the dead host's hash expired")
    redis = aioredis.from_url(REDIS_URL)
    try:

        async def only_the_living() -> bool:
            return await redis.smembers(prefix + "procs") == {b"host-alive/3"}

        await until(only_the_living, what="dead and stopped processes removed from the set")
    finally:
        await redis.aclose()


@pytest.mark.redis
async def test_redis_rewrites_a_process_table_that_redis_lost(prefix: str, processes) -> None:
    a = await processes("host-a/1", refresh_interval=0.1)
    b = await processes("host-b/2", refresh_interval=0.1)
    a.call_started("c/1")
    a.call_started("c/2")
    await until(lambda: b.busy_accounts() == {"c/1": 1, "c/2": 1})
    redis = aioredis.from_url(REDIS_URL)
    key = prefix + "calls:host-a/1"
    try:
        await redis.delete(key)  # lost behind our back (a Redis restart)

        async def rewritten() -> bool:
            table = await redis.hgetall(key)
            return table.get(b"c/1") == b"1" and table.get(b"c/2") == b"1"

        await until(rewritten, what="process a rewrote its whole table")
    finally:
        await redis.aclose()
    await until(lambda: b.busy_accounts() == {"c/1": 1, "c/2": 1}, what="b counts a's calls again")
    a.call_ended("c/2")
    await until(lambda: b.busy_accounts() == {"c/1": 1})


@pytest.mark.redis
def test_the_factory_picks_redis_with_the_redis_location(tmp_path: Path, prefix: str) -> None:
    state = build_account_state(config(tmp_path, "redis", prefix), None)
    assert isinstance(state, RedisAccountState)
    assert isinstance(build_account_state(config(tmp_path), None), LocalAccountState)
