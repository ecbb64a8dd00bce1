"""`sipcore serve` with ``workers`` 1 and 2, loopback out of the guard's whitelist: one source guessing
with a new socket (new source port) per guess, its requests read and owned by both workers, is banned
at the configured threshold for the whole server, then dropped by every worker; a username guessed
from many sources while its phone registers gives at most ``user_failure_threshold`` checked guesses;
every ban is one ``source_banned`` line (source, user, method, reason) that docs/security.md's fail2ban
filter matches, and one count in ``sipcore_bans_total``."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from benchmarks.guard_guessing import distributed, metric, one_source, scrape, served

THRESHOLD = 5
ROOT = Path(__file__).resolve().parents[2]


def fail2ban_regex() -> re.Pattern[str]:
    """docs/security.md's ``failregex`` for bans, fail2ban's <HOST> made a named group."""
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    found = re.search(r"^failregex = (.*source_banned.*)$", text, re.M)
    assert found, "docs/security.md gives no failregex for source_banned"
    return re.compile(found.group(1).replace("<HOST>", r"(?P<host>[0-9a-fA-F.:]+)"))


def ban_lines(lines: list[str]) -> list[str]:
    return [ln for ln in lines if json.loads(ln).get("event") == "source_banned"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("method", ["REGISTER", "INVITE"])
async def test_one_source_is_banned_at_the_threshold_for_the_whole_server(
    tmp_path: Path, workers: int, method: str
) -> None:
    guard = f"{{failure_threshold: {THRESHOLD}, window: 60, ban_time: 600, slow_threshold: 0, whitelist: []}}"
    source = f"127.0.11.{workers}{len(method)}"
    async with served(tmp_path, guard, workers) as (address, metrics_port, lines):
        result = await one_source(address, source, workers, method, limit=4 * THRESHOLD, after=6)
        for _ in range(40):  # the gauge is set by each worker's sweep, once a second
            text = await scrape(metrics_port)
            if metric(text, "sipcore_bans_active") > 0:
                break
            await asyncio.sleep(0.25)
    # the THRESHOLD-th failure bans (at most one failure per other worker in flight)
    assert THRESHOLD - 1 <= result["answered_before_ban"] <= THRESHOLD - 1 + (workers - 1), result  # type: ignore[operator]
    assert result["answered_after_ban"] == 0, result  # every worker drops the source
    assert metric(text, "sipcore_bans_total") == 1
    # each answered guess is one counted failure (INVITE's too), whichever worker checked it
    assert metric(text, "sipcore_auth_failures_total") == result["answered_before_ban"]
    assert metric(text, "sipcore_bans_active") == 1  # every worker holds it: the merged gauge is its max
    if workers == 2:  # the guesses did reach both workers, which told each other
        for w in ("0", "1"):
            assert metric(text, "sipcore_worker_handoffs_total", direction="in", kind="guard", worker=w) > 0
    bans = ban_lines(lines)
    assert len(bans) == 1, bans
    record = json.loads(bans[0])
    assert (record["source"], record["method"], record["reason"]) == (source, method, "failures from source")
    assert record["user"]  # the username of the failure that tipped it
    found = fail2ban_regex().search(bans[0])
    assert found is not None and found.group("host") == source, bans[0]


@pytest.mark.timeout(90)
async def test_distributed_guessing_of_one_user_on_two_workers(tmp_path: Path) -> None:
    """10 sources guess 1001 in turn (new sockets, REGISTERs owned by 1001's worker but read by
    either) while its phone registers every 0.5 s: at most ``user_failure_threshold`` - 1 guesses are
    checked (+1 in flight), each guesser is banned once and logged once, the phone never fails, and a
    new address gets no checked guess, not even with the right password."""
    guard = "{failure_threshold: 10, user_failure_threshold: 6, window: 60, ban_time: 600, whitelist: []}"
    sources = [f"127.0.12.{i}" for i in range(1, 11)]
    async with served(tmp_path, guard, 2) as (address, metrics_port, lines):
        result = await distributed(address, "1001", sources, "127.0.13.1", 2, ("127.0.13.2", "127.0.13.3"))
        text = await scrape(metrics_port)
    assert 5 <= result["answered"] <= 6, result  # type: ignore[operator]
    assert result["phone_ok"] == result["phone_total"] > 0, result
    assert result["fresh_admitted"] == 0, result  # not even the right password from a new address
    bans = ban_lines(lines)
    banned = [json.loads(ln)["source"] for ln in bans]
    assert sorted(banned) == sorted(set(banned)), banned  # each ban logged once
    assert set(banned) == {*sources, "127.0.13.2", "127.0.13.3"}, banned
    assert metric(text, "sipcore_bans_total") == len(bans)
    assert metric(text, "sipcore_auth_failures_total", reason="under attack") > 0
    pattern = fail2ban_regex()
    assert sorted(m.group("host") for ln in bans if (m := pattern.search(ln))) == sorted(banned)
