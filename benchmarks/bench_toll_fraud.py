"""Toll-fraud limits, measured: `python -m benchmarks.bench_toll_fraud [--burst 10] [--reps 3]`.

* burst: N calls of one account capped at 0.05 (0.01 / s) sent at once to `sipcore serve` (one worker,
  two workers replicating in memory, two workers on Redis, and two servers — two "hosts" — sharing
  Redis, the calls alternating between them): how many are answered and what the day costs (CDRs);
* host turn: the cost of `HostTurn.turn()` (flock, inbox read, unlock) a new call pays with workers;
* visibility: how long a tally added by one process takes to be seen by another, through the worker
  channel (two workers' replicas over real socketpairs) and through Redis (two processes' mirrors);
* admission (`--admission` alone): what a call placed pays where hosts share Redis, the Lua admission
  (`RedisAccountState.admit`: ``max_calls`` and two rate windows summed over every live process) —
  its round trip one call at a time and ten in flight, this process's CPU per admission, and Redis's
  (``INFO commandstats``, EVALSHA).

Needs Redis at 127.0.0.1:6379 (keys under unique prefixes, deleted at the end). Figures go to
docs/reliability.md with the machine they were taken on.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from routing.toll_fraud import RateLimit, admission, hold_keys
from server.account_state import HostTurn
from server.account_state_redis import RedisAccountState
from server.account_state_replicated import ReplicatedAccountState
from server.worker_channel import Channel, make_inboxes
from tests.conftest import free_port
from tests.proxy_sip.test_toll_fraud import RATES, burst, cdr_rows, fraud_yaml, platform
from tests.proxy_sip.ua import Ua
from tests.server.workers_helpers import serve

REDIS_URL = "redis://127.0.0.1:6379/0"


async def one_server(workers: int, redis: bool, n: int, tmp: Path) -> tuple[int, int]:
    async with platform(tmp, workers, redis) as (net, trunk, path):
        trunk.mode = "answer"
        async with serve(path, workers, port=net.port) as server:
            caller = await net.caller("4006")
            results = await burst(caller, "0700123456", [net.call_id(i) for i in range(n)])
            answered = sum(1 for _, final in results if final.status == 200)
            for _ in range(answered):
                await caller.request("BYE", timeout=15)
            await asyncio.sleep(1.0)
            await server.stop()
        return answered, sum(r[6] for r in cdr_rows(path.parent / "state") if r[1] == "fraud/4006")


async def two_hosts(n: int, tmp: Path) -> tuple[int, int]:
    """Two servers sharing Redis, each its own state; the burst's calls alternate between them."""
    async with platform(tmp / "a", 1, True) as (net, trunk, path):
        trunk.mode = "answer"
        port_b = free_port()
        (tmp / "b").mkdir()
        (tmp / "b" / "rates.csv").write_text(RATES, encoding="utf-8")
        path_b = tmp / "b" / "fraud.yaml"
        path_b.write_text(
            fraud_yaml(port_b, trunk.port, tmp / "b" / "state", 1, net.prefix), encoding="utf-8"
        )
        async with serve(path, 1, port=net.port) as a, serve(path_b, 1, port=port_b) as b:
            callers = [await net.caller("4006"), await Ua.open("4006", "pw4006", ("127.0.0.1", port_b))]
            callers[1].domain = callers[0].domain
            half = [[secrets.token_hex(8) for _ in range(n // 2)] for _ in callers]
            results = await asyncio.gather(
                *(burst(c, "0700123456", ids) for c, ids in zip(callers, half, strict=True))
            )
            answered = 0
            for caller, result in zip(callers, results, strict=True):
                ok = sum(1 for _, final in result if final.status == 200)
                answered += ok
                for _ in range(ok):
                    await caller.request("BYE", timeout=15)
            await asyncio.sleep(1.0)
            callers[1].close()
            await a.stop()
            await b.stop()
        spent = sum(r[6] for d in ("a", "b") for r in cdr_rows(tmp / d / "state") if r[1] == "fraud/4006")
        return answered, spent


def host_turn_cost(rounds: int = 20000) -> float:
    with tempfile.TemporaryDirectory() as d:
        left, right = make_inboxes(1)[0]
        channel = Channel(left, {})
        turn = HostTurn(str(Path(d) / "calls.lock"), channel._readable)
        start = time.perf_counter()
        for _ in range(rounds):
            with turn.turn():
                pass
        elapsed = time.perf_counter() - start
        turn.close()
        left.close()
        right.close()
    return elapsed / rounds * 1e6


async def visibility_workers(samples: int) -> list[float]:
    inboxes = make_inboxes(2)
    channels = [Channel(inboxes[i][0], {1 - i: inboxes[1 - i][1]}) for i in range(2)]
    states = []
    for i, channel in enumerate(channels):
        state = ReplicatedAccountState(
            i, lambda payload, at_once, c=channel: c.broadcast(payload, at_once), {}
        )
        states.append(state)
    for i, channel in enumerate(channels):
        channel.on_frame = states[i].receive
        channel.start()
    return await _visibility(states[0], states[1], samples, channels)


async def visibility_redis(samples: int) -> list[float]:
    import redis.asyncio as aioredis

    prefix = f"sipcore-bench-fraud-{secrets.token_hex(4)}:"
    a = RedisAccountState.from_url(REDIS_URL, prefix, process="bench-a/1")
    b = RedisAccountState.from_url(REDIS_URL, prefix, process="bench-b/2")
    await a.start()
    await b.start()
    try:
        return await _visibility(a, b, samples)
    finally:
        await a.close()
        await b.close()
        client = aioredis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _visibility(a, b, samples: int, channels=()) -> list[float]:  # type: ignore[no-untyped-def]
    key = hold_keys("bench", "bench/1")[1]
    out = []
    for i in range(samples):
        start = time.perf_counter()
        a.add_tally(key, 1)
        while b.tally(key) != i + 1:
            await asyncio.sleep(0)
        out.append((time.perf_counter() - start) * 1e6)
    for channel in channels:
        channel.close()
    return out


async def admission_cost(samples: int, processes: int = 8) -> dict[str, float]:
    """The admission's round trip (µs) with ``processes`` live process hashes holding counts (hosts ×
    workers; the others' hashes written directly, so this process's CPU is one process's), one call at
    a time and ten in flight; CPU per call placed here (the admission against today's unchecked count
    writes) and in Redis per admission (µs)."""
    import redis.asyncio as aioredis

    prefix = f"sipcore-bench-admit-{secrets.token_hex(4)}:"
    client = aioredis.from_url(REDIS_URL)
    limits = (RateLimit(1_000_000, 1), RateLimit(1_000_000, 60))
    for i in range(1, processes):  # the others hold calls of the account and of 20 others
        table = {f"bench/{n}": 1 for n in range(20)}
        table[admission("bench/0", 1, limits, time.time()).rates[0].current] = i
        await client.hset(f"{prefix}calls:bench-{i}/1", mapping={**table, "~seq": 1})
        await client.sadd(f"{prefix}procs", f"bench-{i}/1")
    a = RedisAccountState.from_url(REDIS_URL, prefix, process="bench-0/1")
    await a.start()
    try:

        async def admit() -> float:
            start = time.perf_counter()
            assert await a.admit(admission("bench/0", 1_000_000, limits, time.time())) == 0
            return (time.perf_counter() - start) * 1e6

        async def unchecked() -> None:  # what a call placed wrote before: its count, its rate windows
            a.call_started("bench/0")
            for key in admission("bench/0", 1_000_000, limits, time.time()).placed:
                a.add_tally(key, 1)
            await asyncio.wait(set(a._writes))

        for _ in range(200):  # warm-up (scripts loaded, connection up)
            await admit()
        before = _evalsha_stats(await client.info("commandstats"))
        cpu = time.process_time()
        serial = [await admit() for _ in range(samples)]
        cpu_admit = (time.process_time() - cpu) / samples * 1e6
        after = _evalsha_stats(await client.info("commandstats"))
        cpu = time.process_time()
        for _ in range(samples):
            await unchecked()
        cpu_unchecked = (time.process_time() - cpu) / samples * 1e6
        flight: list[float] = []
        for _ in range(samples // 10):
            flight += await asyncio.gather(*(admit() for _ in range(10)))
        calls, usec = after[0] - before[0], after[1] - before[1]
        return {
            "serial_p50": _pct(serial, 50), "serial_p99": _pct(serial, 99),
            "flight_p50": _pct(flight, 50), "flight_p99": _pct(flight, 99),
            "cpu_admit": cpu_admit, "cpu_unchecked": cpu_unchecked,
            "redis_usec_per_evalsha": usec / calls if calls else 0.0, "evalsha_calls": calls, "ours": samples,
        }  # fmt: skip
    finally:
        await a.close()
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def _evalsha_stats(info: dict[str, object]) -> tuple[int, int]:
    """(calls, µs) of EVALSHA so far (every script: admissions and the count writes)."""
    stat = info.get("cmdstat_evalsha") or {}
    assert isinstance(stat, dict)
    return int(stat.get("calls", 0)), int(stat.get("usec", 0))


def _pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--admission", action="store_true", help="only the admission's cost")
    args = parser.parse_args()
    if args.admission:
        for processes in (2, 8):
            figures = await admission_cost(args.samples * 4, processes)
            print(
                f"admission, {processes} live processes: "
                + ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
            )
        return
    print(f"host turn (flock + inbox read + unlock): {host_turn_cost():.2f} µs per new call")
    for name, fn in (("worker channel", visibility_workers), ("redis", visibility_redis)):
        values = await fn(args.samples)
        print(f"tally visible in the other process via {name}: p50 {_pct(values, 50):.0f} µs, "
              f"p99 {_pct(values, 99):.0f} µs ({len(values)} samples)")  # fmt: skip
    base = Path(tempfile.mkdtemp(prefix="bench-toll-fraud-"))
    for label, run in (
        ("1 worker", lambda t: one_server(1, False, args.burst, t)),
        ("2 workers, memory", lambda t: one_server(2, False, args.burst, t)),
        ("2 workers, redis", lambda t: one_server(2, True, args.burst, t)),
        ("2 hosts, redis", lambda t: two_hosts(args.burst, t)),
    ):
        outcomes = [
            await run(base / f"{label.replace(' ', '_').replace(',', '')}-{i}") for i in range(args.reps)
        ]
        print(f"burst of {args.burst} simultaneous calls, cap 0.05, {label}: (answered, billed micro-units) "
              f"per run {outcomes}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
