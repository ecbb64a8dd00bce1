"""The brute-force guard holds for the whole platform (`server.guard_redis`): two `sipcore serve` hosts
sharing Redis (127.0.0.2 with two workers, 127.0.0.3 with one; loopback out of the guard's whitelist,
the peers in it). A source guessing on both in turn is banned at ``failure_threshold`` failures in all
(before: at that many on each); a source banned on A is then dropped by B, which answers it nothing;
a fresh source still registers through B; each ban is logged once on each host (with its origin on
the host that did not decide it) and counted once in ``sipcore_bans_total`` over the platform."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.guard_guessing import register_guess
from tests.proxy_sip.configs import password
from tests.server.cluster_helpers import HOSTS, REDIS, drop_prefix, new_platform, reachable, run_host
from tests.server.test_workers_guard import fail2ban_regex
from tests.server.workers_helpers import metric

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

A, B = HOSTS[0], HOSTS[1]
THRESHOLD = 4
GUARD = f"{{failure_threshold: {THRESHOLD}, window: 60, ban_time: 600, slow_threshold: 0, whitelist: []}}"


def bans(stderr: bytes) -> list[dict[str, object]]:
    lines = (json.loads(ln) for ln in stderr.decode(errors="replace").splitlines() if ln.startswith("{"))
    return [rec for rec in lines if rec.get("event") == "source_banned"]


async def test_a_source_banned_on_one_host_is_dropped_by_the_other(tmp_path: Path) -> None:
    if not reachable(REDIS):
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    platform = new_platform(tmp_path, "", hosts=(A, B), workers={A: 2})
    platform.guard = GUARD
    alternating, sticky, fresh = "127.0.21.1", "127.0.21.2", "127.0.21.3"
    try:
        async with run_host(platform, A) as host_a, run_host(platform, B) as host_b:
            # one source guessing on A and B in turn (unknown users, a new socket each)
            answered = []
            for n in range(2 * THRESHOLD):
                host = (A, B)[n % 2]
                if (
                    await register_guess(platform.address(host), alternating, f"guess{n}", "guess")
                    is not None
                ):
                    answered.append(host)
            assert THRESHOLD - 1 <= len(answered) <= THRESHOLD, answered  # before: 2 x (THRESHOLD - 1)
            # one source guessing on A until banned, then trying B: nothing answered
            n = 0
            while await register_guess(platform.address(A), sticky, f"other{n}", "guess") is not None:
                n += 1
                assert n < 2 * THRESHOLD
            assert n == THRESHOLD - 1
            for n in range(3):
                assert await register_guess(platform.address(B), sticky, f"late{n}", "guess") is None
            # a fresh source with the right password still gets in through B (and A)
            for host in (B, A):
                assert await register_guess(platform.address(host), fresh, "1001", password("1001")) == 200
            pages = [await platform.metrics(h) for h in (A, B)]
    finally:
        await drop_prefix(platform.prefix)
    assert sum(metric(p, "sipcore_bans_total") for p in pages) == 2  # once for the platform
    assert sum(metric(p, "sipcore_bans_received_total") for p in pages) == 2  # once on the other host
    logged = {h.address: bans(h.stderr) for h in (host_a, host_b)}
    pattern = fail2ban_regex()  # docs/security.md's filter: each host's fail2ban sees every ban
    for h in (host_a, host_b):
        lines = [ln for ln in h.stderr.decode().splitlines() if '"source_banned"' in ln]
        assert sorted(m.group("host") for ln in lines if (m := pattern.search(ln))) == [alternating, sticky]
    for source in (alternating, sticky):  # one line per host; the deciding host's without an origin
        lines = {h: [rec for rec in recs if rec["source"] == source] for h, recs in logged.items()}
        assert [len(v) for v in lines.values()] == [1, 1], lines
        assert sorted("origin" in v[0] for v in lines.values()) == [False, True], lines
    assert "origin" not in next(r for r in logged[A] if r["source"] == sticky)
