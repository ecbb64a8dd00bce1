"""Toll fraud over real sockets against `sipcore serve` (one worker; two workers replicating in
memory; two workers sharing Redis for the account state and the counters): the N+1th simultaneous
call refused, the call rate refused past its limit, a call that would cross an account's daily cap
ended by BYE at the cap with a CDR priced no more than what was left, a second call refused while a
first one holds the rest of the cap (the account's and the customer's), satellite, premium and
operator-configured prefixes refused with 403 and a Warning; every refusal logged and counted.

With two workers each scenario's calls are given Call-IDs owned by different workers, so what one
worker counted is what the other refuses on. Two servers sharing Redis ("hosts") split a burst: the
daily cap's hold is reserved in Redis in one step, so the burst gets the cap once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipcore.digest import build_authorization
from sipcore.message import Response
from tests.conftest import free_port
from tests.proxy_sip.ua import Dialog, Ua
from tests.server.workers_helpers import metric, owned_by, serve

pytestmark = pytest.mark.timeout(120)

DOMAIN = "fraud.sipcore.test"
CAPS_DOMAIN = "caps.sipcore.test"
TRUNK_HOST = "127.0.0.2"
REDIS_URL = "redis://127.0.0.1:6379/0"

RATES = """\
prefix,destination,category,cost_per_minute
+33,France,fixed,0.01
+33700,Expensive test range,special,0.6
+44,United Kingdom,international,0.01
+881,Satellite,satellite,3.5
"""


def fraud_yaml(port: int, trunk_port: int, state: Path, workers: int, prefix: str | None) -> str:
    shared = ""
    location = "{backend: memory, state_file: null}"
    if prefix is not None:  # every process shares the account state and the counters through Redis
        location = f'{{backend: redis, url: "{REDIS_URL}", key_prefix: "{prefix}loc:"}}'
        shared = f'  counters: {{backend: redis, url: "{REDIS_URL}", key_prefix: "{prefix}rating:"}}\n'
    return f"""\
default_domain: {DOMAIN}
server:
  listen: {{udp: ["127.0.0.1:{port}"], tcp: ["127.0.0.1:{port}"]}}
  advertised_address: 127.0.0.1:{port}
  local_addresses: [127.0.0.1, localhost]
  workers: {workers}
  log: {{format: json, level: info}}
  state_dir: {state}
registrar:
  realm: {DOMAIN}
  nonce_secret: toll-fraud-tests-secret-0123456
  guard: {{failure_threshold: 50, window: 60, ban_time: 60}}
  location: {location}
proxy:
  max_call_duration: 60
  outbound_trunk: carrier
  toll_fraud:
    premium_prefixes: {{GB: ["+449"]}}
trunks:
  carrier:
    address: {TRUNK_HOST}:{trunk_port}
    transport: udp
    inbound_sources: [{TRUNK_HOST}]
rating:
{shared}  billing: {{timezone: Europe/Paris}}
  rate_tables: {{t: rates.csv}}
  packages:
    per_second: {{rate_table: t, markup: {{fixed: 0, percent: 0}}, pulse: 1}}
customers:
  - id: fraud
    name: Fraud Target SAS
    reference: CUST-F
    country: FR
    domains: [{DOMAIN}]
    default_package: per_second
    blocked_prefixes: ["+4420"]
    accounts:
      - {{extension: "4001", username: "4001", password: pw4001, max_calls: 2, block_premium: true}}
      - {{extension: "4002", username: "4002", password: pw4002, calls_per_minute: 3}}
      - {{extension: "4003", username: "4003", password: pw4003, daily_cap: 0.03}}
      - {{extension: "4004", username: "4004", password: pw4004, daily_cap: 0.05}}
      - {{extension: "4005", username: "4005", password: pw4005, calls_per_second: 1}}
      - {{extension: "4006", username: "4006", password: pw4006, max_calls: 100, daily_cap: 0.05}}
      - {{extension: "4007", username: "4007", password: pw4007, max_calls: 100, daily_cap: 0.05}}
      - {{extension: "4008", username: "4008", password: pw4008, max_calls: 100, daily_cap: 0.05}}
  - id: capco
    name: Capped SARL
    reference: CUST-C
    country: FR
    domains: [{CAPS_DOMAIN}]
    default_package: per_second
    balance: {{mode: SOFT, daily_cap: 0.03}}
    accounts:
      - {{extension: "5001", username: "5001", password: pw5001}}
      - {{extension: "5002", username: "5002", password: pw5002}}
"""


class Net:
    """The server's address, its worker count, and callers opened on it."""

    def __init__(self, port: int, workers: int, redis: bool = False) -> None:
        self.port, self.workers, self.redis = port, workers, redis
        self.prefix: str | None = None
        self.uas: list[Ua] = []

    async def caller(self, extension: str, domain: str = DOMAIN) -> Ua:
        ua = await Ua.open(extension, f"pw{extension}", ("127.0.0.1", self.port))
        ua.domain = domain
        self.uas.append(ua)
        return ua

    async def converged(self) -> None:
        """With Redis, what one process counted reaches the others by a publication through Redis
        (about a millisecond; docs/security.md "Toll fraud"): give it that before a call that must be
        refused on another process's count. Workers replicating in memory need nothing (a worker reads
        its inbox before it routes an INVITE)."""
        if self.redis:
            await asyncio.sleep(0.2)

    def call_id(self, worker: int) -> str:
        """A Call-ID owned by ``worker`` (mod the workers): a scenario spreads its calls over them."""
        return owned_by(worker % self.workers, self.workers) if self.workers > 1 else secrets.token_hex(8)


async def burst(caller: Ua, dialed: str, call_ids: list[str]) -> list[tuple[Dialog, Response]]:
    """Simultaneous calls: every 407 round first, then every authenticated INVITE at once; their
    first answers past 1xx."""
    return await burst_over([(caller, call_ids)], dialed)


async def burst_over(callers: list[tuple[Ua, list[str]]], dialed: str) -> list[tuple[Dialog, Response]]:
    """`burst` from several callers (one account on several hosts): every 407 round first, then
    every authenticated INVITE of every caller at once."""
    armed = [(caller, await challenged(caller, dialed, call_ids)) for caller, call_ids in callers]
    sent = [
        (c, c.invite(dialed, 2, d.credentials, d.call_id, d.from_tag))
        for c, dialogs in armed
        for d in dialogs
    ]
    finals = [await c.response(d.call_id, timeout=10) for c, d in sent]
    for (c, dlg), final in zip(sent, finals, strict=True):
        c.ack(dlg, final)
    return [(dlg, final) for (_, dlg), final in zip(sent, finals, strict=True)]


async def challenged(caller: Ua, dialed: str, call_ids: list[str]) -> list[Dialog]:
    """The 407 round of each call: dialogs with their credentials, ready to send."""
    dialogs = []
    for call_id in call_ids:
        dlg = caller.invite(dialed, call_id=call_id)
        challenge = await caller.response(call_id, timeout=5)
        assert challenge.status == 407, challenge.start_line()
        caller.ack(dlg, challenge)
        value = build_authorization(challenge.headers.get("proxy-authenticate") or "", username=caller.user,
                                    password=caller.password, method="INVITE",
                                    uri=f"sip:{dialed}@{caller.domain}", cnonce=secrets.token_hex(4))  # fmt: skip
        dlg.credentials = f"Proxy-Authorization: {value}\n"
        dialogs.append(dlg)
    return dialogs


async def place(caller: Ua, dialed: str, call_id: str) -> tuple[Dialog, Response]:
    """INVITE with its 407 round on a chosen Call-ID; the first answer past 1xx."""
    dlg = caller.invite(dialed, call_id=call_id)
    first = await caller.response(call_id, timeout=5)
    assert first.status == 407, first.start_line()
    caller.ack(dlg, first)
    value = build_authorization(first.headers.get("proxy-authenticate") or "", username=caller.user,
                                password=caller.password, method="INVITE", uri=f"sip:{dialed}@{caller.domain}",
                                cnonce=secrets.token_hex(4))  # fmt: skip
    dlg.credentials = f"Proxy-Authorization: {value}\n"
    dlg = caller.invite(dialed, 2, dlg.credentials, call_id, dlg.from_tag)
    final = await caller.response(call_id, timeout=5)
    if final.status >= 300:
        caller.ack(dlg, final)
    return dlg, final


def refused(final: Response, words: str) -> None:
    warning = final.headers.get("warning") or ""
    assert final.status == 403, final.start_line()
    assert warning.startswith("399 ") and words in warning, warning


def cdr_rows(state: Path) -> list[tuple[str, str, str, int, int, int, int]]:
    db = sqlite3.connect(state / "cdr.sqlite3")
    try:
        return db.execute(
            "SELECT call_id, account_id, disposition, sip_status, duration, billed_seconds, price_micros"
            " FROM cdr ORDER BY start_us"
        ).fetchall()
    finally:
        db.close()


async def settled(seconds: float = 1.0) -> None:
    """Settlement runs after the call's end, off the call path: give it its moment (not a timing
    assertion: the next call's answer is what is checked)."""
    await asyncio.sleep(seconds)


MODES = [  # (workers, shared through Redis)
    pytest.param((1, False), id="1-worker"),
    pytest.param((2, False), id="2-workers"),
    pytest.param((2, True), id="2-workers-redis", marks=pytest.mark.redis),
]


@contextlib.asynccontextmanager
async def platform(tmp_path: Path, workers: int, redis: bool) -> AsyncIterator[tuple[Net, Ua, Path]]:
    """The configuration written, a trunk UA, callers opened on the port; the server is started by
    the test (``serve(path, ...)``), as often as it likes; Redis keys dropped at the end."""
    prefix = f"sipcore-test-fraud-{secrets.token_hex(4)}:" if redis else None
    if redis:
        import redis.asyncio as aioredis

        client = aioredis.from_url(REDIS_URL)
        try:
            await client.ping()
        except Exception as exc:  # pragma: no cover - depends on the machine
            pytest.skip(f"Redis unreachable: {exc!r}")
        finally:
            await client.aclose()
    port = free_port()
    trunk = await Ua.open("carrier", "", ("127.0.0.1", port), host=TRUNK_HOST)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "rates.csv").write_text(RATES, encoding="utf-8")
    path = tmp_path / "fraud.yaml"
    path.write_text(fraud_yaml(port, trunk.port, tmp_path / "state", workers, prefix), encoding="utf-8")
    net = Net(port, workers, redis)
    net.prefix = prefix
    try:
        yield net, trunk, path
    finally:
        for ua in net.uas:
            ua.close()
        trunk.close()
        if prefix is not None:
            import redis.asyncio as aioredis

            client = aioredis.from_url(REDIS_URL)
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()


@pytest.fixture(params=MODES)
async def served(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Net, Ua, Path, object]]:
    workers, redis = request.param
    async with (
        platform(tmp_path, workers, redis) as (net, trunk, path),
        serve(path, workers, port=net.port) as server,
    ):
        yield net, trunk, path.parent / "state", server


async def test_toll_fraud_limits_over_sip(served: tuple[Net, Ua, Path, object]) -> None:
    net, trunk, state, server = served

    # -- the N+1th simultaneous call (max_calls: 2) --------------------------------------------------
    trunk.mode = "ring"
    a = await net.caller("4001")
    ringing = []
    for worker in (0, 1):
        call_id = net.call_id(worker)
        dlg = a.invite("0612345678", call_id=call_id)
        challenge = await a.response(call_id, timeout=5)
        a.ack(dlg, challenge)
        value = build_authorization(challenge.headers.get("proxy-authenticate") or "", username="4001",
                                    password="pw4001", method="INVITE", uri=f"sip:0612345678@{DOMAIN}",
                                    cnonce="c0ffee")  # fmt: skip
        dlg = a.invite("0612345678", 2, f"Proxy-Authorization: {value}\n", call_id, dlg.from_tag)
        assert (await a.response(call_id, final=False, timeout=5)).status == 180
        ringing.append(dlg)
    await net.converged()
    _, third = await place(a, "0612345678", net.call_id(1))
    refused(third, "Simultaneous call limit reached (2)")
    for dlg in ringing:
        a.cancel(dlg)
        assert (await a.response(dlg.call_id, timeout=5)).status == 487
    await asyncio.sleep(0.3)  # the ends reach every worker's count

    # -- destinations: satellite (default list), premium of another country, the customer's prefix --
    before = len(trunk.requests("INVITE"))
    trunk.mode = "busy"
    for dialed, words in (
        ("00881612345678", "prefix +881"),
        ("00882161234567", "prefix +882"),
        ("00442071234567", "prefix +4420"),
    ):
        _, final = await place(a, dialed, net.call_id(len(dialed)))
        refused(final, words)
    _, premium = await place(a, "00449012345678", net.call_id(1))
    refused(premium, "Premium-rate")
    assert len(trunk.requests("INVITE")) == before  # none reached the carrier
    _, allowed = await place(a, "00441612345678", net.call_id(0))  # elsewhere in the UK: the carrier's 486
    assert allowed.status == 486

    # -- calls per minute: 3 pass (spread over the workers), the 4th is refused ----------------------
    b = await net.caller("4002")
    for i in range(3):
        _, final = await place(b, "0612345678", net.call_id(i))
        assert final.status == 486, final.start_line()
        await net.converged()
    _, fourth = await place(b, "0612345678", net.call_id(3))
    refused(fourth, "Call rate limit reached (3 per minute)")

    # -- calls per second: a burst of 8 at 1 per second is refused past the first ones --------------
    c = await net.caller("4005")
    statuses = [(await place(c, "0612345678", net.call_id(i)))[1].status for i in range(8)]
    assert statuses.count(403) >= 1 and statuses[0] == 486, statuses

    # -- the account's daily cap (0.03 at 0.01 / s): answered, ended by BYE at 3 s -------------------
    trunk.mode = "answer"
    d = await net.caller("4003")
    dlg, ok = await place(d, "0700123456", net.call_id(0))
    assert ok.status == 200
    d.ack(dlg, ok)
    bye = await d.request("BYE", timeout=10)
    assert bye.call_id == dlg.call_id
    await settled()
    _, over = await place(d, "0700123456", net.call_id(1))  # the other worker knows the day's spend
    assert over.status == 403 and "cap" in (over.headers.get("warning") or ""), over.start_line()

    # -- a call in progress holds the rest of the cap: a second one is refused meanwhile ------------
    e = await net.caller("4004")  # cap 0.05
    first, ok = await place(e, "0700123456", net.call_id(0))
    assert ok.status == 200
    e.ack(first, ok)
    await net.converged()
    _, second = await place(e, "0700123456", net.call_id(1))
    assert second.status == 403 and "cap of this account" in (second.headers.get("warning") or "")
    e.in_dialog(first, "BYE")  # the caller hangs up well before the cap
    assert (await e.response(first.call_id, "BYE", timeout=5)).status == 200
    await settled()
    third_call, ok = await place(e, "0700123456", net.call_id(1))  # what is left is free again
    assert ok.status == 200
    e.ack(third_call, ok)
    assert (await e.request("BYE", timeout=10)).call_id == third_call.call_id  # cut at the rest

    # -- the customer's cap held by one account refuses another ---------------------------------------
    f = await net.caller("5001", CAPS_DOMAIN)
    g = await net.caller("5002", CAPS_DOMAIN)
    held, ok = await place(f, "0700123456", net.call_id(0))
    assert ok.status == 200
    f.ack(held, ok)
    await net.converged()
    _, other = await place(g, "0700123456", net.call_id(1))
    assert other.status == 403 and (other.headers.get("warning") or "").endswith(
        '"daily spending cap reached"'
    )
    assert (await f.request("BYE", timeout=10)).call_id == held.call_id
    await settled()

    text = await server.metrics()  # type: ignore[attr-defined]
    for reason in ("call_limit", "call_rate", "destination_blocked", "premium_blocked",
                   "account_daily_cap_reached", "daily_cap_reached"):  # fmt: skip
        assert metric(text, "sipcore_calls_refused_total", reason=reason) >= 1, reason
    assert metric(text, "sipcore_calls_refused_total", reason="destination_blocked") == 3
    assert await server.stop() == 0  # type: ignore[attr-defined]

    # -- what was billed: no account past its cap, the cut-off call priced exactly what was left -----
    rows = cdr_rows(state)
    priced: dict[str, int] = {}
    for _, account, _, _, _, _, price in rows:
        priced[account] = priced.get(account, 0) + price
    assert priced["fraud/4003"] == 30_000  # 3 s at 0.01: the whole cap, not one pulse more
    cut = [r for r in rows if r[1] == "fraud/4003" and r[2] == "answered"]
    assert [(r[4], r[5], r[6]) for r in cut] == [(3, 3, 30_000)]
    assert 0 < priced["fraud/4004"] <= 50_000
    assert priced["capco/5001"] + priced.get("capco/5002", 0) <= 30_000
    lines = [json.loads(x) for x in server.stderr.decode().splitlines() if x.startswith("{")]  # type: ignore[attr-defined]
    logged = {(x.get("account"), x.get("reason")) for x in lines if x.get("event") == "call_refused"}
    assert ("fraud/4001", "call_limit") in logged and ("fraud/4001", "destination_blocked") in logged
    assert ("fraud/4002", "call_rate") in logged and ("capco/5002", "daily_cap_reached") in logged


@pytest.mark.parametrize("mode", MODES)
async def test_the_days_spend_survives_a_restart(tmp_path: Path, mode: tuple[int, bool]) -> None:
    """The server stopped and started again the same day: the spend read back from the CDR store
    still counts against the caps (the account that used its cap is refused, the other gets what is
    left of its own)."""
    workers, redis = mode
    async with platform(tmp_path, workers, redis) as (net, trunk, path):
        trunk.mode = "answer"
        async with serve(path, workers, port=net.port) as server:
            d = await net.caller("4003")  # cap 0.03: cut at 3 s
            dlg, ok = await place(d, "0700123456", net.call_id(0))
            assert ok.status == 200
            d.ack(dlg, ok)
            assert (await d.request("BYE", timeout=10)).call_id == dlg.call_id
            e = await net.caller("4004")  # cap 0.05: 0.02 spent
            dlg, ok = await place(e, "0700123456", net.call_id(1))
            assert ok.status == 200
            e.ack(dlg, ok)
            await asyncio.sleep(2)
            e.in_dialog(dlg, "BYE")
            assert (await e.response(dlg.call_id, "BYE", timeout=5)).status == 200
            await settled()
            assert await server.stop() == 0
        spent_4004 = sum(r[6] for r in cdr_rows(path.parent / "state") if r[1] == "fraud/4004")
        assert 20_000 <= spent_4004 < 50_000
        async with serve(path, workers, port=net.port) as server:
            _, over = await place(d, "0700123456", net.call_id(1))
            assert over.status == 403 and "cap of this account" in (over.headers.get("warning") or "")
            dlg, ok = await place(e, "0700123456", net.call_id(0))
            assert ok.status == 200
            e.ack(dlg, ok)
            assert (await e.request("BYE", timeout=10)).call_id == dlg.call_id  # cut at what was left
            await settled()
            assert await server.stop() == 0
        rows = cdr_rows(path.parent / "state")
        assert sum(r[6] for r in rows if r[1] == "fraud/4004") == 50_000  # the cap, to the micro-unit
        assert sum(r[6] for r in rows if r[1] == "fraud/4003") == 30_000


@pytest.mark.redis
async def test_the_days_spend_outlives_a_host_with_redis(tmp_path: Path) -> None:
    """Two hosts (two servers, each its own state directory and CDR store) sharing Redis: the spend
    one host settled still counts on the other after the first is stopped."""
    async with platform(tmp_path / "a", 1, True) as (net, trunk, path):
        trunk.mode = "answer"
        other_port = free_port()
        other = tmp_path / "b"
        other.mkdir()
        (other / "rates.csv").write_text(RATES, encoding="utf-8")
        other_path = other / "fraud.yaml"
        yaml = fraud_yaml(other_port, trunk.port, other / "state", 1, net.prefix)
        other_path.write_text(yaml, encoding="utf-8")
        async with serve(path, 1, port=net.port) as host_a:
            d = await net.caller("4003")
            dlg, ok = await place(d, "0700123456", net.call_id(0))
            assert ok.status == 200
            d.ack(dlg, ok)
            assert (await d.request("BYE", timeout=10)).call_id == dlg.call_id
            await settled()
            assert await host_a.stop() == 0
        async with serve(other_path, 1, port=other_port) as host_b:
            caller = await Ua.open("4003", "pw4003", ("127.0.0.1", other_port))
            caller.domain = DOMAIN
            try:
                _, over = await place(caller, "0700123456", secrets.token_hex(8))
            finally:
                caller.close()
            assert over.status == 403 and "cap of this account" in (over.headers.get("warning") or "")
            assert await host_b.stop() == 0
        assert cdr_rows(other / "state") == [] or all(r[6] == 0 for r in cdr_rows(other / "state"))


@pytest.mark.parametrize("mode", MODES)
async def test_a_burst_of_simultaneous_calls_gets_the_cap_once(
    tmp_path: Path, mode: tuple[int, bool]
) -> None:
    """Ten calls of one account sent at once, spread over the workers: the first one routed holds
    the whole cap (0.05 = 5 s at 0.01 / s), every other one is refused while it lasts; the day
    costs the cap, to the micro-unit, not workers x the cap."""
    workers, redis = mode
    async with platform(tmp_path, workers, redis) as (net, trunk, path):
        trunk.mode = "answer"
        async with serve(path, workers, port=net.port) as server:
            caller = await net.caller("4006")
            results = await burst(caller, "0700123456", [net.call_id(i) for i in range(10)])
            answered = [dlg for dlg, final in results if final.status == 200]
            refusals = [final for _, final in results if final.status == 403]
            assert len(answered) == 1 and len(refusals) == 9, [f.status for _, f in results]
            assert all("cap of this account" in (f.headers.get("warning") or "") for f in refusals)
            assert (await caller.request("BYE", timeout=10)).call_id == answered[0].call_id
            await settled()
            assert await server.stop() == 0
        rows = [r for r in cdr_rows(path.parent / "state") if r[1] == "fraud/4006"]
        assert sum(r[6] for r in rows) == 50_000


@pytest.mark.redis
async def test_a_burst_split_over_two_hosts_gets_the_cap_once(tmp_path: Path) -> None:
    """Two hosts (two servers, each its own state directory, CDR store and host lock) sharing Redis,
    three accounts capped at 0.05 (5 s at 0.01 / s): ten simultaneous calls of each account, five
    sent to each host. Every hold is reserved in Redis against the cap in one step, so one call per
    account is answered and the day costs each account its cap to the micro-unit, not twice it."""
    async with platform(tmp_path / "a", 1, True) as (net, trunk, path):
        trunk.mode = "answer"
        other_port = free_port()
        other = tmp_path / "b"
        other.mkdir()
        (other / "rates.csv").write_text(RATES, encoding="utf-8")
        other_path = other / "fraud.yaml"
        other_path.write_text(
            fraud_yaml(other_port, trunk.port, other / "state", 1, net.prefix), encoding="utf-8"
        )
        async with serve(path, 1, port=net.port) as host_a, serve(other_path, 1, port=other_port) as host_b:
            answered: list[tuple[Ua, Dialog]] = []
            for extension in ("4006", "4007", "4008"):
                on_a = await net.caller(extension)
                on_b = await Ua.open(extension, f"pw{extension}", ("127.0.0.1", other_port))
                on_b.domain = DOMAIN
                net.uas.append(on_b)
                ids = [secrets.token_hex(8) for _ in range(10)]
                results = await burst_over([(on_a, ids[::2]), (on_b, ids[1::2])], "0700123456")
                oks = [dlg for dlg, final in results if final.status == 200]
                refusals = [final for _, final in results if final.status == 403]
                assert len(oks) == 1 and len(refusals) == 9, (extension, [f.status for _, f in results])
                assert all("cap of this account" in (f.headers.get("warning") or "") for f in refusals)
                answered.append((on_a if oks[0].call_id in ids[::2] else on_b, oks[0]))
            for caller, dlg in answered:  # each cut at the cap by its host
                assert (await caller.request("BYE", timeout=10)).call_id == dlg.call_id
            await settled()
            assert await host_a.stop() == 0
            assert await host_b.stop() == 0
        rows = cdr_rows(path.parent / "state") + cdr_rows(other / "state")
        for extension in ("4006", "4007", "4008"):
            mine = [r for r in rows if r[1] == f"fraud/{extension}"]
            assert sum(r[6] for r in mine) == 50_000, mine
            assert sorted(r[2] for r in mine).count("answered") == 1, mine
