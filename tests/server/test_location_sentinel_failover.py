"""The whole server on a Sentinel-managed Redis (issue 21): location and account state reach the
master the sentinels name and follow a failover. A private master + replica + sentinels started by
the test (tests/server/sentinel_helpers), never the machine's Redis.

Short (make test): two workers, phones registered, SENTINEL FAILOVER promotes the replica; phones
registered before and after are called, and the new master holds every registration.
Load run (``-m load``, SIPCORE_LOAD=1): three sentinels, the master killed with -9 under a light
REGISTER and call load; failures and the time to recover are printed (docs/reliability.md figures)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import statistics
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.cdr.helpers import wait_until
from tests.conftest import free_port
from tests.proxy_sip.configs import DOMAIN, write_config
from tests.proxy_sip.ua import Ua
from tests.server.sentinel_helpers import MASTER_NAME, SentinelSet
from tests.server.test_workers_calls import call, phone
from tests.server.workers_helpers import metric, owned_by, serve

pytestmark = pytest.mark.timeout(120)


def _config(tmp_path: Path, deployment: SentinelSet, prefix: str) -> Path:
    sentinels = ", ".join(f'"{a}"' for a in deployment.sentinel_addresses)
    location = (f'{{backend: redis, url: "redis://127.0.0.1/0", key_prefix: "{prefix}", timeout: 0.5, '
                f'retry_interval: 0.3, sentinels: [{sentinels}], sentinel_master: "{MASTER_NAME}"}}')  # fmt: skip
    return write_config(tmp_path, free_port(), free_port(), location=location)


async def _aors_on(port: int, prefix: str) -> set[str]:
    direct = aioredis.Redis(port=port)
    try:
        keys = [k.decode() async for k in direct.scan_iter(match=f"{prefix}loc:aor:*", count=500)]
    finally:
        await direct.aclose()
    return {k.rsplit(":aor:", 1)[1] for k in keys}


async def test_calls_and_registrations_follow_a_sentinel_failover(tmp_path: Path) -> None:
    deployment = SentinelSet(tmp_path / "redis", sentinels=1)
    (tmp_path / "redis").mkdir()
    prefix = f"sipcore-sentinel-{secrets.token_hex(4)}:"
    uas: list[Ua] = []
    try:
        await deployment.start()
        old, new = deployment.redis_ports
        async with serve(_config(tmp_path, deployment, prefix), 2) as served:
            caller = await phone(served.address, "1003")
            before = await phone(served.address, "1005")
            uas += [caller, before]
            assert await _aors_on(old, prefix) == {f"sip:1003@{DOMAIN}", f"sip:1005@{DOMAIN}"}

            await deployment.failover()
            await deployment.wait_master_is(new)
            after = await phone(served.address, "1002")
            uas.append(after)
            for callee in (before, after):
                for owner in (0, 1):
                    await call(caller, callee, owned_by(owner, 2))

            async def all_on_new_master() -> bool:
                return await _aors_on(new, prefix) == {f"sip:{u}@{DOMAIN}" for u in ("1003", "1005", "1002")}

            await wait_until(all_on_new_master, timeout=20)
            assert await served.stop() == 0
        assert "Traceback" not in served.stderr.decode()
    finally:
        for ua in uas:
            ua.close()
        deployment.stop()


# -- the load run ----------------------------------------------------------------------------------


@pytest.mark.load
@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.environ.get("SIPCORE_LOAD"), reason="load run: SIPCORE_LOAD=1")
async def test_master_killed_under_register_and_call_load(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    down_after = int(os.environ.get("SIPCORE_SENTINEL_DOWN_AFTER_MS", "1000"))
    deployment = SentinelSet(tmp_path / "redis", sentinels=3, down_after_ms=down_after)
    prefix = f"sipcore-sentinel-{secrets.token_hex(4)}:"
    phones_n, interval, before_s, after_s = 20, 0.5, 5.0, 20.0
    users = ["1001", "1002", "1005", "1006", "1008", "1012", "1013"][: min(phones_n, 7)]
    register_ok: list[float] = []
    register_failed: list[float] = []
    calls_ok: list[float] = []
    calls_failed: list[tuple[float, str]] = []
    uas: list[Ua] = []
    try:
        await deployment.start()
        old, new = deployment.redis_ports
        async with serve(_config(tmp_path, deployment, prefix), 2) as served:
            caller = await phone(served.address, "1003")
            callee = await phone(served.address, "1014")
            phones = [await phone(served.address, u) for u in users]
            uas += [caller, callee, *phones]
            loop = asyncio.get_running_loop()
            start = loop.time()
            stop_at = start + before_s + after_s

            async def keep_registering(ua: Ua) -> None:
                while loop.time() < stop_at:
                    t = loop.time()
                    try:
                        await ua.register(timeout=3)
                        register_ok.append(t - start)
                    except (AssertionError, TimeoutError) as exc:
                        register_failed.append(t - start)
                        print("register failed", ua.user, round(t - start, 2), exc)
                    await asyncio.sleep(max(0.0, interval - (loop.time() - t)))

            async def keep_calling() -> None:
                n = 0
                while loop.time() < stop_at:
                    t = loop.time()
                    try:
                        await call(caller, callee, owned_by(n % 2, 2))
                        calls_ok.append(t - start)
                    except (AssertionError, TimeoutError) as exc:
                        calls_failed.append((t - start, str(exc)[:80]))
                    n += 1
                    await asyncio.sleep(max(0.0, interval - (loop.time() - t)))

            async def kill_master() -> float:
                await asyncio.sleep(before_s)
                deployment.kill(old)
                return loop.time() - start

            killed_at, promoted_at = 0.0, 0.0

            async def failover() -> None:
                nonlocal killed_at, promoted_at
                killed_at = await kill_master()
                await deployment.wait_master_is(new, timeout=60)
                promoted_at = loop.time() - start

            await asyncio.gather(*(keep_registering(ua) for ua in phones), keep_calling(), failover())

            async def caught_up() -> bool:
                text = await served.metrics()
                return (
                    metric(text, "sipcore_location_redis_up") >= 2
                    and metric(text, "sipcore_location_pending_aors") == 0
                )

            await wait_until(caught_up, timeout=30)
            on_new = await _aors_on(new, prefix)
            expected = {f"sip:{u}@{DOMAIN}" for u in (*users, "1003", "1014")}
            text = await served.metrics()
            assert await served.stop() == 0
        log = served.stderr.decode()
        events = [line for line in log.splitlines() if '"location_redis' in line]
        print("\n--- Sentinel failover under load ---")
        print(f"phones {len(users)} re-registering every {interval}s, calls every {interval}s, workers 2, "
              f"sentinels 3, down-after {down_after} ms")  # fmt: skip
        print(f"master killed at {killed_at:.2f}s, replica promoted at {promoted_at:.2f}s "
              f"(failover {promoted_at - killed_at:.2f}s)")  # fmt: skip
        print(f"REGISTER: {len(register_ok)} ok, {len(register_failed)} failed")
        print(f"calls: {len(calls_ok)} ok, {len(calls_failed)} failed {calls_failed[:5]}")
        gaps = sorted(b - a for a, b in itertools.pairwise(calls_ok))
        if gaps:
            print(
                f"longest gap between successful call starts {gaps[-1]:.2f}s (median {statistics.median(gaps):.2f}s)"
            )
        print(f"outages {metric(text, 'sipcore_location_redis_outages_total')}, "
              f"written back {metric(text, 'sipcore_location_written_back_total')}")  # fmt: skip
        ups = [json.loads(line) for line in events if '"location_redis_up"' in line]
        print("per worker: down for (s) " + ", ".join(str(u["down_seconds"]) for u in ups)
              + "; AORs written back " + ", ".join(str(u["written_back"]) for u in ups))  # fmt: skip
        replayed = [json.loads(line)["replayed_aors"] for line in events if "master_changed" in line]
        print(f"recent AORs replayed to the new master, per worker: {replayed}")
        assert on_new >= expected, expected - on_new
        assert not register_failed
        assert "Traceback" not in log
    finally:
        for ua in uas:
            ua.close()
        deployment.stop()
