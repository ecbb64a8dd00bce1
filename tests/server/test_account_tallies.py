"""Toll-fraud tallies (calls placed per rate window, spend held and settled) are summed over every
process, like calls in progress: one process, two worker replicas over real worker-channel
socketpairs, and two Redis "hosts" on a real Redis. A tally never shows among busy accounts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from routing.forwarding_store import JsonForwardingStore
from routing.toll_fraud import hold_keys, rate_key
from server.account_state import LocalAccountState
from server.account_state_factory import build_account_state
from server.worker import _IN_DIALOG, HEAD_SCAN, Worker
from tests.server.test_account_state import config, prefix, processes, until, workers  # noqa: F401

HOLD_C, HOLD_A = hold_keys("c", "c/1001")
RATE = rate_key("c/1001", 1, 1_764_000_000)


def test_one_process_adds_and_takes_back(tmp_path: Path) -> None:
    state = LocalAccountState(JsonForwardingStore.in_state_dir(str(tmp_path)))
    assert state.add_tally(HOLD_C, 30_000) == 30_000
    state.call_started("c/1001")
    assert state.tally(HOLD_C) == 30_000 and state.busy_accounts() == {"c/1001": 1}
    assert state.add_tally(HOLD_C, -30_000) == 0 and state.tally(HOLD_C) == 0
    assert state.add_tally(RATE, -1) == 0  # never below zero


async def test_worker_replicas_sum_each_workers_share(tmp_path: Path, workers: list[Worker]) -> None:  # noqa: F811
    for worker in workers:
        worker.channel.start()
    a, b = (build_account_state(config(tmp_path), w) for w in workers)
    a.add_tally(HOLD_C, 30_000)
    b.add_tally(HOLD_C, 20_000)
    a.add_tally(RATE, 1)
    b.add_tally(RATE, 1)
    await until(lambda: a.tally(HOLD_C) == b.tally(HOLD_C) == 50_000, what="holds summed everywhere")
    await until(lambda: a.tally(RATE) == b.tally(RATE) == 2, what="calls placed summed everywhere")
    a.add_tally(HOLD_C, -30_000)  # a's call settled
    await until(lambda: b.tally(HOLD_C) == 20_000, what="release replicated")
    assert a.busy_accounts() == b.busy_accounts() == {}


@pytest.mark.redis
async def test_redis_hosts_sum_each_processs_share(prefix: str, processes) -> None:  # noqa: F811
    a, b = await processes("host-a/1"), await processes("host-b/2")
    a.add_tally(HOLD_A, 7)
    b.add_tally(HOLD_A, 5)
    await until(lambda: a.tally(HOLD_A) == b.tally(HOLD_A) == 12, what="shared through Redis")
    b.add_tally(HOLD_A, -5)
    await until(lambda: a.tally(HOLD_A) == 7, what="release shared")
    assert a.busy_accounts() == {}
    c = await processes("host-c/3")  # a process started later reads the others' shares
    assert c.tally(HOLD_A) == 7


SPENT = "#spent:a:2026-12-04:c/1001"


def test_a_shared_tally_is_this_processs_share_without_redis(tmp_path: Path) -> None:
    state = LocalAccountState(JsonForwardingStore.in_state_dir(str(tmp_path)))
    state.add_shared(SPENT, 30_000, "2026-12-04")
    state.add_shared(SPENT, 1, "2026-12-04")
    assert state.tally(SPENT) == 30_001
    state.drop_shared(SPENT)
    assert state.tally(SPENT) == 0


async def test_one_claim_wins_among_workers(tmp_path: Path, workers: list[Worker]) -> None:  # noqa: F811
    for worker in workers:
        worker.channel.start()
    a, b = (build_account_state(config(tmp_path), w) for w in workers)
    assert await a.claim("#seeded:2026-12-04", "2026-12-04")
    assert not await a.claim("#seeded:2026-12-04", "2026-12-04")
    await until(lambda: b.tally("#seeded:2026-12-04") == 1, what="the claim replicated")
    assert not await b.claim("#seeded:2026-12-04", "2026-12-04")


@pytest.mark.redis
async def test_a_shared_total_outlives_the_process_that_wrote_it(prefix: str, processes) -> None:  # noqa: F811
    a, b = await processes("host-a/1"), await processes("host-b/2")
    a.add_shared(SPENT, 30_000, "2026-12-04")
    b.add_shared(SPENT, 20_000, "2026-12-04")
    assert a.tally(SPENT) >= 30_000  # its own at once
    await until(lambda: a.tally(SPENT) == b.tally(SPENT) == 50_000, what="totals published")
    claims = await asyncio.gather(*(p.claim("#seeded:2026-12-04", "2026-12-04") for p in (a, b)))
    assert sorted(claims) == [False, True]  # exactly one process seeds
    await a.close()  # a clean stop takes its calls in progress with it, not the day's spend
    c = await processes("host-c/3")
    assert c.tally(SPENT) == 50_000 and b.tally(SPENT) == 50_000
    assert c.tally("#seeded:2026-12-04") == 2


@pytest.mark.parametrize(
    ("head", "in_dialog"),
    [
        (b"INVITE sip:1@x SIP/2.0\r\nTo: <sip:1@x>\r\nFrom: <sip:2@x>;tag=a\r\n", False),
        (b"INVITE sip:1@x SIP/2.0\r\nTo: <sip:1@x>;tag=b\r\nFrom: <sip:2@x>;tag=a\r\n", True),
        (b"INVITE sip:1@x SIP/2.0\r\nt: <sip:1@x> ; TAG=b\r\n", True),
        (b"INVITE sip:1@x SIP/2.0\r\nFrom: <sip:2@x>;tag=a\r\nto:<sip:1@x>\r\n", False),
    ],
)
def test_a_handed_over_invite_is_new_unless_its_to_has_a_tag(head: bytes, in_dialog: bool) -> None:
    """New calls handed over between workers are routed after the batch, under the host's turn."""
    assert bool(_IN_DIALOG.search(head, 0, HEAD_SCAN)) is in_dialog


@pytest.mark.redis
async def test_a_hold_is_reserved_against_the_cap_across_hosts(prefix: str, processes) -> None:  # noqa: F811
    """In one step in Redis: the day's spent total + every process's holds + the new hold stay within
    the cap, or nothing is written (whatever the asking process's mirror knows yet); a host that dies
    takes its holds with it when its hash expires."""
    day = "2026-12-04"
    spent_c = "#spent:c:2026-12-04:c"
    a, b = await processes("host-a/1"), await processes("host-b/2", ttl=1.0, refresh_interval=0.2)
    a.add_shared(SPENT, 20_000, day)
    account_cap = ((HOLD_C, spent_c, None), (HOLD_A, SPENT, 50_000))
    customer_cap = ((HOLD_C, spent_c, 30_000), (HOLD_A, SPENT, None))
    assert await a.reserve(account_cap, 30_000, day) == 0  # 20 000 spent + 30 000: the cap exactly
    assert a.tally(HOLD_A) == a.tally(HOLD_C) == 30_000
    assert await b.reserve(account_cap, 1, day) == 2  # one micro-unit over the account's cap
    assert await b.reserve(customer_cap, 1, day) == 1  # and over the customer's
    b.add_tally(HOLD_A, -2)  # the refused calls' ends take back what they asked
    b.add_tally(HOLD_C, -2)
    assert b.add_tally(HOLD_A, 0) == b.add_tally(HOLD_C, 0) == 0
    await until(lambda: b.tally(HOLD_A) == 30_000, what="the reserved hold published")
    a.add_tally(HOLD_A, -30_000)  # a's call settled (its price would join the spent total)
    a.add_tally(HOLD_C, -30_000)
    await until(lambda: b.tally(HOLD_A) == 0, what="the release written")
    assert await b.reserve(account_cap, 30_000, day) == 0
    assert await a.reserve(account_cap, 1, day) == 2
    a.add_tally(HOLD_A, -1)
    a.add_tally(HOLD_C, -1)
    for task in b._tasks:  # b dies: no clean stop, its hash is no longer refreshed
        task.cancel()
    await asyncio.sleep(1.5)
    assert await a.reserve(account_cap, 30_000, day) == 0  # b's hold lapsed with its hash
