"""Password guessing against a platform of two `sipcore serve` hosts sharing Redis (127.0.0.2 with
``--workers-a`` workers, 127.0.0.3 with one; loopback out of the guard's whitelist, ``failure_threshold``
10, ``user_failure_threshold`` 30, no slow window): what a guesser gets from the whole platform.
Bounded in count and time; prints one JSON object.

    python -m benchmarks.guard_hosts
    python -m benchmarks.guard_hosts --tree /tmp/sipcore-before   # another tree's server

``spread``: one address guesses (new socket each, unknown users) on A and B in turn, 40 attempts,
without stopping at a drop; ``move``: one address guesses on A until dropped, then 20 times on B;
``distributed``: 20 addresses guess 1001 in turn, spread over A and B (9 rounds), while its phone
registers through A every 0.5 s; then 5 never-seen addresses try the right password through B;
``attacked_on_a``: 20 addresses guess 1002 through A only (2 rounds), then 5 never-seen addresses
try its right password through B.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from benchmarks.guard_guessing import register_guess
from sipcore.waiting import wait_set
from tests.proxy_sip.configs import password
from tests.registrar_sip.client import Phone, SipClient
from tests.server.cluster_helpers import HOSTS, Platform, drop_prefix, new_platform, run_host

ROOT = Path(__file__).resolve().parents[1]
GUARD = "{failure_threshold: 10, user_failure_threshold: 30, window: 60, ban_time: 600, slow_threshold: 0, whitelist: []}"
A, B = HOSTS[0], HOSTS[1]


async def guesses(platform: Platform, source: str, hosts: list[str], tag: str) -> dict[str, int]:
    """One guess per entry of ``hosts`` from ``source``; the answered ones per host."""
    answered = dict.fromkeys(sorted(set(hosts)), 0)
    for n, host in enumerate(hosts):
        if await register_guess(platform.address(host), source, f"{tag}{n}", "guess") is not None:
            answered[host] += 1
    return answered


async def measure(tree: Path, workers_a: int) -> dict[str, object]:
    out: dict[str, object] = {"workers": {A: workers_a, B: 1}}
    with tempfile.TemporaryDirectory() as tmp:
        platform = new_platform(Path(tmp), "", hosts=(A, B), workers={A: workers_a})
        platform.guard = GUARD
        try:
            async with run_host(platform, A, tree), run_host(platform, B, tree):
                out["spread"] = await guesses(platform, "127.0.31.1", [A, B] * 20, "spread")
                on_a = 0
                while on_a < 40 and await register_guess(platform.address(A), "127.0.31.2", f"m{on_a}", "g"):
                    on_a += 1
                out["move"] = {A: on_a, B: (await guesses(platform, "127.0.31.2", [B] * 20, "moved"))[B]}
                out["distributed"] = await distributed(platform)
                out["attacked_on_a"] = await attacked_on_a(platform)
        finally:
            await drop_prefix(platform.prefix)
    return out


async def distributed(platform: Platform) -> dict[str, object]:
    stop = asyncio.Event()
    phone = {"ok": 0, "total": 0}

    async def real_phone() -> None:
        client = await SipClient.open(platform.address(A), "UDP", "127.0.32.1")
        me = Phone(client, "1001", password("1001"))
        try:
            while not stop.is_set():
                phone["total"] += 1
                resp = await me.register(expires=600, timeout=0.5)
                phone["ok"] += resp is not None and resp.status == 200
                await wait_set(stop, 0.5)
        finally:
            await client.close()

    task = asyncio.create_task(real_phone())
    await asyncio.sleep(0.3)
    answered = dict.fromkeys((A, B), 0)
    try:
        for r in range(9):
            for i in range(20):
                host = (A, B)[(r + i) % 2]
                if await register_guess(platform.address(host), f"127.0.33.{i + 1}", "1001", "guess"):
                    answered[host] += 1
        fresh = [await register_guess(platform.address(B), f"127.0.34.{i}", "1001", password("1001"))
                 for i in range(1, 6)]  # fmt: skip
    finally:
        stop.set()
        await task
    return {"guesses": 180, "answered": answered, "fresh_admitted_through_B": fresh.count(200),
            "phone_ok": phone["ok"], "phone_total": phone["total"]}  # fmt: skip


async def attacked_on_a(platform: Platform) -> dict[str, object]:
    answered = 0
    for _ in range(2):
        for i in range(20):
            if await register_guess(platform.address(A), f"127.0.35.{i + 1}", "1002", "guess"):
                answered += 1
    fresh = [await register_guess(platform.address(B), f"127.0.36.{i}", "1002", password("1002"))
             for i in range(1, 6)]  # fmt: skip
    return {"guesses": 40, "answered_on_A": answered, "fresh_admitted_through_B": fresh.count(200)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the source tree whose server to run")
    parser.add_argument("--workers-a", type=int, default=2)
    args = parser.parse_args()
    result = asyncio.run(measure(args.tree.resolve(), args.workers_a))
    print(json.dumps({"tree": str(args.tree), **result}, indent=1))


if __name__ == "__main__":
    main()
