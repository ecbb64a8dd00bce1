"""Redis cut mid-run under the location store (issue 20, faults): a TCP proxy the test controls sits
between sipcore and the real Redis at 127.0.0.1:6379. With one worker and with two: REGISTERs during
the outage are answered 200 and are in Redis after it, calls to phones registered before and during
the outage connect (during and after), and the outage is one log line each way, counted."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
from pathlib import Path

import pytest

from tests.cdr.helpers import TcpProxy, wait_until
from tests.conftest import free_port
from tests.proxy_sip.configs import DOMAIN, write_config
from tests.server.test_workers_calls import BY_OWNER, call, phone
from tests.server.workers_helpers import metric, owned_by, serve

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

REDIS = ("127.0.0.1", 6379)


def _redis_up() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("workers", [1, 2])
async def test_registrations_and_calls_go_on_while_redis_is_cut(tmp_path: Path, workers: int) -> None:
    if not _redis_up():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    import redis.asyncio as aioredis

    cut = TcpProxy(*REDIS)
    await cut.start()
    prefix = f"sipcore-outage-{secrets.token_hex(6)}:"
    location = (f'{{backend: redis, url: "redis://127.0.0.1:{cut.port}/0", key_prefix: "{prefix}", '
                "timeout: 0.5, retry_interval: 0.3}")  # fmt: skip
    path = write_config(tmp_path, free_port(), free_port(), location=location)
    direct = aioredis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    owners = range(workers)
    # one phone registered before the outage and one during it, per worker owning the REGISTER
    before_users = [BY_OWNER[w % 2][0] for w in owners]
    during_users = [BY_OWNER[w % 2][1] for w in owners]
    caller_user = "1003"  # a plain phone that is none of the callees
    uas = []
    try:
        async with serve(path, workers) as served:
            caller = await phone(served.address, caller_user)
            before = [await phone(served.address, u) for u in before_users]
            uas += [caller, *before]
            await cut.cut()  # Redis unreachable from here on

            during = [await phone(served.address, u) for u in during_users]  # 401, then 200
            uas += during
            for callee in (*before, *during):  # rung from the local view, whichever worker owns the call
                for owner in owners:
                    await call(caller, callee, owned_by(owner, workers))

            await cut.start()  # Redis back, same port: the probe writes back what was registered

            async def written_back() -> bool:
                keys = [f"{prefix}loc:aor:sip:{u}@{DOMAIN}" for u in during_users]
                return await direct.exists(*keys) == len(keys)

            await wait_until(written_back, timeout=20)
            for u, ua in zip(during_users, during, strict=True):
                fields = await direct.hgetall(f"{prefix}loc:aor:sip:{u}@{DOMAIN}")
                assert any(f":{ua.port}".encode() in v for k, v in fields.items() if k != b"_v"), fields
                ttl = await direct.pttl(f"{prefix}loc:aor:sip:{u}@{DOMAIN}")
                assert 0 < ttl <= 605_000  # the registration's expiry (600 s) + margin, respected

            async def all_up() -> bool:
                return metric(await served.metrics(), "sipcore_location_redis_up") >= workers

            await wait_until(all_up, timeout=20)
            for callee in (*before, *during):  # and through Redis again
                await call(caller, callee, owned_by(0, workers))
            text = await served.metrics()
            assert metric(text, "sipcore_location_redis_outages_total") >= 1
            assert metric(text, "sipcore_location_written_back_total") >= len(during_users)
            assert metric(text, "sipcore_location_pending_aors") == 0
            assert await served.stop() == 0
        events = [
            json.loads(line).get("event")
            for line in served.stderr.decode().splitlines()
            if line.startswith("{")
        ]
        assert "Traceback" not in served.stderr.decode()
        assert 1 <= events.count("location_redis_down") <= workers  # once per process that saw it
        assert events.count("location_redis_up") == events.count("location_redis_down")
    finally:
        for ua in uas:
            ua.close()
        await cut.cut()
        keys = [k async for k in direct.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await direct.delete(*keys)
        await direct.aclose()


@pytest.mark.load
@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.environ.get("SIPCORE_LOAD"), reason="load run: SIPCORE_LOAD=1")
async def test_redis_cut_for_seconds_under_register_and_call_load(tmp_path: Path) -> None:
    """The figures for docs/reliability.md: phones re-registering and a caller calling every 0.5 s
    through two workers while Redis is cut for ``SIPCORE_CUT_SECONDS`` (10); failures counted, and the
    time from Redis back to every pending AOR written back."""
    if not _redis_up():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    import redis.asyncio as aioredis

    cut_s = float(os.environ.get("SIPCORE_CUT_SECONDS", "10"))
    cut = TcpProxy(*REDIS)
    await cut.start()
    prefix = f"sipcore-outage-{secrets.token_hex(6)}:"
    location = (
        f'{{backend: redis, url: "redis://127.0.0.1:{cut.port}/0", key_prefix: "{prefix}"}}'  # defaults
    )
    path = write_config(tmp_path, free_port(), free_port(), location=location)
    direct = aioredis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    users = ["1001", "1002", "1005", "1006", "1008", "1012", "1013"]
    ok: list[float] = []
    failed: list[float] = []
    calls_ok = 0
    calls_failed: list[str] = []
    uas = []
    try:
        async with serve(path, 2) as served:
            caller = await phone(served.address, "1003")
            callee = await phone(served.address, "1014")
            phones = [await phone(served.address, u) for u in users]
            uas += [caller, callee, *phones]
            loop = asyncio.get_running_loop()
            start = loop.time()
            stop_at = start + 5 + cut_s + 5

            async def keep_registering(ua) -> None:  # type: ignore[no-untyped-def]
                while loop.time() < stop_at:
                    t = loop.time()
                    try:
                        await ua.register(timeout=3)
                        ok.append(t - start)
                    except (AssertionError, TimeoutError):
                        failed.append(t - start)
                    await asyncio.sleep(max(0.0, 0.5 - (loop.time() - t)))

            async def keep_calling() -> None:
                nonlocal calls_ok
                n = 0
                while loop.time() < stop_at:
                    t = loop.time()
                    try:
                        await call(caller, callee, owned_by(n % 2, 2))
                        calls_ok += 1
                    except (AssertionError, TimeoutError) as exc:
                        calls_failed.append(f"{t - start:.1f}s {str(exc)[:60]}")
                    n += 1
                    await asyncio.sleep(max(0.0, 0.5 - (loop.time() - t)))

            back_at = 0.0

            async def outage() -> None:
                nonlocal back_at
                await asyncio.sleep(5)
                await cut.cut()
                await asyncio.sleep(cut_s)
                await cut.start()
                back_at = loop.time()

            await asyncio.gather(*(keep_registering(ua) for ua in phones), keep_calling(), outage())

            async def caught_up() -> bool:
                text = await served.metrics()
                return (metric(text, "sipcore_location_redis_up") >= 2
                        and metric(text, "sipcore_location_pending_aors") == 0)  # fmt: skip

            await wait_until(caught_up, timeout=60)
            written_after = loop.time() - back_at
            text = await served.metrics()
            keys = [f"{prefix}loc:aor:sip:{u}@{DOMAIN}" for u in users]
            in_redis = await direct.exists(*keys)
            assert await served.stop() == 0
        log = served.stderr.decode()
        print(
            f"\n--- Redis cut {cut_s}s under load (workers 2, {len(users)} phones every 0.5 s, a call every 0.5 s)"
        )
        print(
            f"REGISTER {len(ok)} ok, {len(failed)} failed; calls {calls_ok} ok, {len(calls_failed)} failed {calls_failed[:3]}"
        )
        print(f"all pending AORs written back {written_after:.2f}s after Redis came back (probe backoff)")
        print(f"outages {metric(text, 'sipcore_location_redis_outages_total')}, retries "
              f"{metric(text, 'sipcore_location_redis_retries_total')}, written back "
              f"{metric(text, 'sipcore_location_written_back_total')}, fallback "
              f"{metric(text, 'sipcore_location_fallback_total')}")  # fmt: skip
        print("log lines: " + ", ".join(f"{e}={log.count(e)}" for e in
              ("location_redis_down", "location_redis_retry", "location_redis_up", "Traceback")))  # fmt: skip
        assert not failed and in_redis == len(keys)
        assert "Traceback" not in log
    finally:
        for ua in uas:
            ua.close()
        await cut.cut()
        keys = [k async for k in direct.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await direct.delete(*keys)
        await direct.aclose()
