"""Several hosts, one platform (issue 21): three `sipcore serve` processes on 127.0.0.2 (A, two
workers), 127.0.0.3 (B) and 127.0.0.4 (C, two workers), sending to each other over UDP or TCP, share
the machine's Redis (location, account state, counters; one key prefix per test) and a fresh
PostgreSQL database (CDRs).

Phones registered through A (over UDP and over TCP) are reached when the call enters B (from a phone)
or C (from the carrier: a test UA, then SIPp): the INVITE reaches them through A (its Via on top),
in-dialog requests both ways follow, a fork to contacts on A and B works (the branch through A is
CANCELled through A), call limits and forwarding hold across hosts, and each call has exactly one
CDR, written by the host where it entered. Then A is killed with -9: the phone registers again
through B (what DNS SRV failover makes it do) and calls reach it through B.

The hosts probe each other (server.cluster.probe_interval): once B's probes find A dead, a call
entering B to a phone registered through A takes the phone's unreachable route at once, not after
A's 4 s silence; when A is back and the phone registers again, calls reach it through A.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from pathlib import Path

import pytest
import yaml

from sipcore.message import Request
from sipcore.waiting import within
from tests.cdr.helpers import wait_until
from tests.conftest import free_port
from tests.proxy_sip import sipp_party
from tests.proxy_sip.ua import Dialog, Ua, trunk_invite
from tests.server.cluster_helpers import (
    CARRIER,
    HOSTS,
    REDIS,
    Platform,
    cdr_rows,
    drop_prefix,
    fresh_database,
    new_platform,
    reachable,
    run_host,
)
from tests.server.test_workers_calls import phone
from tests.server.workers_helpers import metric

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(180)]

A, B, C = HOSTS
SCENARIO = Path(__file__).parent / "sipp" / "carrier_uac.xml"  # SIPp as the carrier


def _needs_services() -> None:
    if not reachable(REDIS):
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    if not reachable(("127.0.0.1", 5432)):
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")


async def _req(ua: Ua, method: str, call_id: str) -> Request:
    """The next ``method`` request of call ``call_id`` that ``ua`` received (within 5 s)."""
    msg = await ua.expect(lambda m: isinstance(m, Request) and m.method == method and m.call_id == call_id, 5,
                          method)  # fmt: skip
    assert isinstance(msg, Request)
    return msg


def _through(req: Request, host: str) -> bool:
    """The request reached the phone from ``host``: that host's Via is the top one."""
    return req.top_via.host == host


async def _phone_call(
    caller: Ua, callee: Ua, via: str, callee_hangs_up: bool = False, dialed: str | None = None
) -> str:
    """A call from ``caller`` (a phone) to ``callee`` (``dialed``: its number, or one forwarded to it),
    which must be reached from ``via``; both sides' in-dialog requests cross. Returns the Call-ID."""
    dlg = await caller.call(dialed or callee.user)
    final = await caller.response(dlg.call_id, timeout=5)
    assert final.status == 200, final.start_line()
    invite = await _req(callee, "INVITE", dlg.call_id)
    assert invite.call_id == dlg.call_id and _through(invite, via), invite.top_via
    caller.ack(dlg, final)
    ack = await _req(callee, "ACK", dlg.call_id)
    assert ack.call_id == dlg.call_id and _through(ack, via)
    if callee_hangs_up:  # the callee's dialog: Record-Route in order, the caller's Contact
        back = Dialog(dlg.call_id, invite.to_tag or f"{callee.user}-{dlg.call_id[:8]}", caller.user, 10, "")
        back.from_header = f"<sip:{callee.user}@{callee.domain}>;tag={callee.user}-{dlg.call_id[:8]}"
        back.to_header = invite.headers.get("from") or ""
        back.route_set = invite.headers.get_all("record-route")
        contact = invite.headers.get("contact") or ""
        back.remote_target = contact[contact.index("<") + 1 : contact.index(">")]
        callee.in_dialog(back, "BYE")
        await _req(caller, "BYE", dlg.call_id)
        assert (await callee.response(dlg.call_id, "BYE", timeout=5)).status == 200
    else:
        caller.in_dialog(dlg, "BYE")
        bye = await _req(callee, "BYE", dlg.call_id)
        assert bye.call_id == dlg.call_id and _through(bye, via)
        assert (await caller.response(dlg.call_id, "BYE", timeout=5)).status == 200
    return dlg.call_id


async def _carrier_call(carrier: Ua, did: str, callee: Ua, via: str) -> str:
    dlg = trunk_invite(carrier, did, "+33612345678")
    final = await carrier.response(dlg.call_id, timeout=5)
    assert final.status == 200, final.start_line()
    invite = await _req(callee, "INVITE", dlg.call_id)
    assert invite.call_id == dlg.call_id and _through(invite, via), invite.top_via
    carrier.ack(dlg, final)
    await _req(callee, "ACK", dlg.call_id)
    carrier.in_dialog(dlg, "BYE")
    await _req(callee, "BYE", dlg.call_id)
    assert (await carrier.response(dlg.call_id, "BYE", timeout=5)).status == 200
    return dlg.call_id


async def _one_cdr_each(platform: Platform, call_ids: list[str]) -> list[object]:
    async def written() -> bool:
        return {r["call_id"] for r in await cdr_rows(platform.dsn)} >= set(call_ids)

    await wait_until(written, timeout=20)
    await asyncio.sleep(1.5)  # a second CDR for the same call (the transit host's) would be in by now
    rows = await cdr_rows(platform.dsn)
    counts = collections.Counter(r["call_id"] for r in rows if r["call_id"] in call_ids)
    assert counts == dict.fromkeys(call_ids, 1), counts
    return rows


@pytest.mark.sipp
@pytest.mark.parametrize("between", ["udp", "tcp"])  # server.cluster.transport
async def test_calls_cross_hosts_and_a_host_dies(tmp_path: Path, sipp_binary: str, between: str) -> None:
    _needs_services()
    async with fresh_database() as dsn:
        platform = new_platform(tmp_path, dsn, workers={A: 2, C: 2}, transport=between)
        uas: list[Ua] = []
        try:
            async with contextlib.AsyncExitStack() as stack:
                host_a = await stack.enter_async_context(run_host(platform, A))
                await stack.enter_async_context(run_host(platform, B))
                await stack.enter_async_context(run_host(platform, C))
                on_a_udp = await phone(platform.address(A), "1001")
                on_a_tcp = await phone(platform.address(A), "1003", tcp=True)
                on_b = await phone(platform.address(B), "1002")
                carrier = await Ua.open(
                    "carrier", "", platform.address(C), host=CARRIER, port=platform.carrier_port
                )
                uas += [on_a_udp, on_a_tcp, on_b, carrier]

                calls = [
                    await _phone_call(on_b, on_a_udp, via=A),  # enters B, the phone's NAT flow is A's
                    await _phone_call(on_b, on_a_tcp, via=A),  # its TCP connection lives on A
                    await _phone_call(on_b, on_a_udp, via=A, callee_hangs_up=True),
                    await _carrier_call(carrier, "+33184000001", on_a_udp, via=A),  # enters C
                ]

                # a fork: DID +33184000002 rings 1002 (on B) and 1003 (on A, TCP) in parallel; B's
                # phone answers once both ring, the branch through A is CANCELled through A
                on_a_tcp.mode = on_b.mode = "ring"
                dlg = trunk_invite(carrier, "+33184000002", "+33612345678")
                invites = [
                    await on_b.request("INVITE", timeout=5),
                    await on_a_tcp.request("INVITE", timeout=5),
                ]
                assert _through(invites[0], B) and _through(invites[1], A)
                on_b.answer_now(dlg.call_id)
                final = await carrier.response(dlg.call_id, timeout=5)
                assert final.status == 200
                cancel = await on_a_tcp.request("CANCEL", timeout=5)
                assert cancel.call_id == dlg.call_id and _through(cancel, A)
                carrier.ack(dlg, final)
                carrier.in_dialog(dlg, "BYE")
                assert (await carrier.response(dlg.call_id, "BYE", timeout=5)).status == 200
                calls.append(dlg.call_id)
                on_a_tcp.mode = on_b.mode = "answer"

                # simultaneous calls are counted platform-wide: 1014 (max_calls 1) is in a call that
                # entered B; its next call, entering C, is refused
                limited = await phone(platform.address(B), "1014")
                uas.append(limited)
                first = await limited.call(on_b.user)
                answered = await limited.response(first.call_id, timeout=5)
                assert answered.status == 200
                limited.ack(first, answered)
                limited.server = platform.address(C)
                second = await limited.call(on_a_udp.user)
                refused = await limited.response(second.call_id, timeout=5)
                assert refused.status == 403 and "limit" in (refused.headers.get("warning") or "").lower()
                limited.ack(second, refused)
                limited.server = platform.address(B)
                limited.in_dialog(first, "BYE")
                assert (await limited.response(first.call_id, "BYE", timeout=5)).status == 200
                calls.append(first.call_id)

                # a forwarding set by feature code through B is followed by C
                forwarder = await phone(platform.address(B), "1005")
                uas.append(forwarder)
                code = await forwarder.call("*21*1003#")
                assert (await forwarder.response(code.call_id, timeout=5)).status == 486
                # the change reaches C through Redis (write, then pub/sub): until it has, 1005 itself
                # rings (busy); the change must arrive, and then the call goes to 1003 through A
                forwarder.mode = "busy"
                on_b.server = platform.address(C)
                for _ in range(50):
                    probe = await on_b.call("1005")
                    answer = await on_b.response(probe.call_id, timeout=5)
                    if answer.status != 486:
                        break
                    on_b.ack(probe, answer)
                    calls.append(probe.call_id)
                    await asyncio.sleep(0.1)
                assert answer.status == 200, answer.start_line()
                invite = await _req(on_a_tcp, "INVITE", probe.call_id)
                assert _through(invite, A)
                on_b.ack(probe, answer)
                on_b.in_dialog(probe, "BYE")
                await _req(on_a_tcp, "BYE", probe.call_id)
                assert (await on_b.response(probe.call_id, "BYE", timeout=5)).status == 200
                calls.append(probe.call_id)
                on_b.server = platform.address(B)
                await _one_cdr_each(platform, calls)
                # A relayed the calls to its phones without making them its own: counted as transit
                relayed = metric(await platform.metrics(A), "sipcore_transit_requests_total", method="INVITE")
                assert relayed >= 6, relayed
                assert metric(await platform.metrics(A), "sipcore_calls_finished_total") == 0

                # the carrier as SIPp, on the carrier's address (taken over from the test's UA meanwhile)
                carrier.close()
                before = len(await cdr_rows(platform.dsn))
                run = await _carrier_sipp(sipp_binary, SCENARIO, tmp_path / "sipp-carrier", platform, 2)
                assert await run.result(timeout=30) == 0, run.errors()
                by_sipp = [m for m in on_a_udp.requests("INVITE") if m.call_id.endswith("@" + CARRIER)]
                assert len(by_sipp) == 2 and all(_through(m, A) for m in by_sipp)

                async def sipp_cdrs() -> bool:
                    return len(await cdr_rows(platform.dsn)) >= before + 2

                await wait_until(sipp_cdrs, timeout=20)
                rows = await cdr_rows(platform.dsn)
                assert len({r["call_id"] for r in rows}) == len(rows) == before + 2
                carrier = await Ua.open(
                    "carrier", "", platform.address(C), host=CARRIER, port=platform.carrier_port
                )
                uas.append(carrier)

                # A dies: its phone registers again through B and is reached through B from then on
                host_a.kill()
                await within(host_a.proc.wait(), 10)
                on_a_udp.server = platform.address(B)
                await on_a_udp.register(timeout=5)
                after = await _carrier_call(carrier, "+33184000001", on_a_udp, via=B)
                await _one_cdr_each(platform, [after])
        finally:
            for ua in uas:
                ua.close()
            await sipp_party.stop_all()
            await drop_prefix(platform.prefix)


async def test_a_dead_host_is_probed_down_and_its_phones_unreachable_at_once(tmp_path: Path) -> None:
    """A (one worker) and B (two workers) probe each other every second, 2 failures for down. 1007
    (forwarded to 1005 when unreachable) is registered through A. A is killed with -9: once B's
    workers all count A down, a call entering B to 1007 is forwarded to 1005 well under A's 4 s
    (``PEER_ANSWER_WAIT``) silence; A restarted, 1007 registered again, its calls go through A."""
    _needs_services()
    async with fresh_database() as dsn:
        platform = new_platform(tmp_path, dsn, hosts=(A, B), workers={B: 2})
        platform.probe = (1, 2)
        peer_a = f"{A}:{platform.ports[A]}"
        uas: list[Ua] = []

        async def a_seen_up_by(workers: int) -> bool:
            return metric(await platform.metrics(B), "sipcore_peer_up", peer=peer_a) == workers

        try:
            async with contextlib.AsyncExitStack() as stack:
                host_a = await stack.enter_async_context(run_host(platform, A))
                host_b = await stack.enter_async_context(run_host(platform, B))
                on_a = await phone(platform.address(A), "1007")
                caller = await phone(platform.address(B), "1002")
                fallback = await phone(platform.address(B), "1005")
                uas += [on_a, caller, fallback]
                await _phone_call(caller, on_a, via=A)

                host_a.kill()
                await within(host_a.proc.wait(), 10)
                await wait_until(lambda: a_seen_up_by(0), timeout=15)  # 2-3 s: probes every second
                dlg = await caller.call("1007")  # its INVITE with credentials is out: time from here
                started = time.monotonic()
                final = await caller.response(dlg.call_id, timeout=10)
                waited = time.monotonic() - started
                assert final.status == 200, final.start_line()
                invite = await _req(fallback, "INVITE", dlg.call_id)
                assert "reason=unavailable" in (invite.headers.get("diversion") or "")
                assert waited < 2.0, f"the call waited {waited:.2f} s for the dead host"  # 4 s before
                print(f"call to a phone behind the dead host: forwarded after {waited * 1000:.0f} ms")
                caller.ack(dlg, final)
                caller.in_dialog(dlg, "BYE")
                assert (await caller.response(dlg.call_id, "BYE", timeout=5)).status == 200

                await stack.enter_async_context(run_host(platform, A))  # back
                await wait_until(lambda: a_seen_up_by(2), timeout=15)
                await on_a.register(timeout=5)
                await _phone_call(caller, on_a, via=A)
            logged = host_b.stderr.decode()  # once B has stopped: each change, once per worker
            assert logged.count('"peer_down"') >= 2 and logged.count('"peer_up"') >= 2, logged[-3000:]
        finally:
            for ua in uas:
                ua.close()
            await drop_prefix(platform.prefix)


def test_the_peers_probed_are_the_other_hosts_given_as_one_address(tmp_path: Path) -> None:
    """Each single-address peer at its own port, else our advertise port; not ourselves, not a
    network; the ports dropped for whom transit and the guard trust."""
    from config.loader import load_config
    from server.cluster import peer_links
    from tests.proxy_sip.configs import write_config

    path = write_config(tmp_path, 5060, 5062)
    doc = yaml.safe_load(path.read_text())
    doc["registrar"]["location"] = {"backend": "redis"}
    peers = ["127.0.0.2", "127.0.0.3", "127.0.0.4:5090", "[::1]:5080", "10.0.0.0/24"]
    doc["server"]["cluster"] = {"advertise": "127.0.0.2:5060", "peers": peers, "transport": "tcp"}
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    links = peer_links(cfg)
    assert [(k.name, k.dest.transport, k.dest.host, k.dest.port) for k in links] == [
        ("127.0.0.3:5060", "tcp", "127.0.0.3", 5060), ("127.0.0.4:5090", "tcp", "127.0.0.4", 5090),
        ("[::1]:5080", "tcp", "::1", 5080),
    ]  # fmt: skip
    assert all(k.peer and k.probe_interval == 5 and k.probe_failures == 2 for k in links)
    networks = ("127.0.0.2/32", "127.0.0.3/32", "127.0.0.4/32", "::1/128", "10.0.0.0/24")
    assert cfg.server.cluster.networks == networks  # trusted for transit, never banned
    doc["server"]["cluster"]["probe_interval"] = None
    path.write_text(yaml.safe_dump(doc))
    assert peer_links(load_config(path)) == ()


def test_the_cluster_section_needs_the_redis_location(tmp_path: Path) -> None:
    import yaml

    from config.loader import ConfigError, load_config
    from tests.proxy_sip.configs import write_config

    path = write_config(tmp_path, 5060, 5062)  # the memory location store
    doc = yaml.safe_load(path.read_text())
    doc["server"]["cluster"] = {"advertise": "127.0.0.1:5060", "peers": ["127.0.0.3"]}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"location\.backend: redis"):
        load_config(path)
    doc["registrar"]["location"] = {"backend": "redis"}
    path.write_text(yaml.safe_dump(doc))
    cluster = load_config(path).server.cluster
    assert cluster is not None and cluster.advertise.port == 5060 and cluster.peers == ("127.0.0.3/32",)


@pytest.mark.load
@pytest.mark.sipp
@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.environ.get("SIPCORE_LOAD"), reason="load run: SIPCORE_LOAD=1")
async def test_kill_a_host_during_carrier_calls(tmp_path: Path, sipp_binary: str) -> None:
    """SIPp as the carrier (127.0.0.5) calls a DID through C at 2 calls/s (1 s each); the SIPp phone
    it rings is registered through A, which is killed with -9 after 4 s. Every call C took gets
    exactly one CDR (written by C): those answered before the kill, those in progress (C ends them
    when their BYE towards A fails) and those sent to A afterwards (failed). Then the phone registers
    through B and every call of a second run connects through B."""
    _needs_services()
    async with fresh_database() as dsn:
        platform = new_platform(tmp_path, dsn, workers={A: 2})
        phone_port = free_port()
        try:
            async with contextlib.AsyncExitStack() as stack:
                host_a = await stack.enter_async_context(run_host(platform, A))
                await stack.enter_async_context(run_host(platform, B))
                await stack.enter_async_context(run_host(platform, C))
                await sipp_party.register(sipp_binary, tmp_path / "reg-a", f"{A}:{platform.ports[A]}", "1001",
                                          "pw1001", phone_port)  # fmt: skip
                uas = await sipp_party.start(sipp_binary, tmp_path / "uas-a", "phone_uas.xml", port=phone_port, calls=1000,
                                             timeout=120)  # fmt: skip

                async def carrier(name: str, calls: int) -> tuple[int, sipp_party.SippRun]:
                    run = await _carrier_sipp(sipp_binary, SCENARIO, tmp_path / name, platform, calls)
                    return await run.result(timeout=150), run

                first = asyncio.create_task(carrier("carrier-1", 30))
                await asyncio.sleep(4)
                host_a.kill()
                await within(host_a.proc.wait(), 10)
                await first
                await uas.stop()

                async def all_ended() -> bool:
                    return len(await cdr_rows(platform.dsn)) >= 30

                await wait_until(all_ended, timeout=90)  # BYEs and INVITEs towards A time out (32 s)
                rows = await cdr_rows(platform.dsn)
                counts = collections.Counter(r["call_id"] for r in rows)
                assert len(counts) == 30 and set(counts.values()) == {1}, counts
                dispositions = collections.Counter(r["disposition"] for r in rows)
                assert dispositions["answered"] >= 5, dispositions  # the first seconds connected
                print(
                    f"carrier run 1 (A killed at 4 s): SIPp exit {first.result()[0]}, CDRs {dict(dispositions)}"
                )

                # the phone moves to B (SRV failover): every call of the next run connects through B
                await sipp_party.register(sipp_binary, tmp_path / "reg-b", f"{B}:{platform.ports[B]}", "1001",
                                          "pw1001", phone_port)  # fmt: skip
                uas = await sipp_party.start(sipp_binary, tmp_path / "uas-b", "phone_uas.xml", port=phone_port, calls=1000,
                                             timeout=60)  # fmt: skip
                status, run = await carrier("carrier-2", 10)
                assert status == 0, run.errors()
                await uas.stop()

                async def second_run_in() -> bool:
                    return len(await cdr_rows(platform.dsn)) >= 40

                await wait_until(second_run_in, timeout=20)
                rows = await cdr_rows(platform.dsn)
                assert len({r["call_id"] for r in rows}) == len(rows) == 40
        finally:
            await sipp_party.stop_all()
            await drop_prefix(platform.prefix)


async def _carrier_sipp(
    sipp: str, scenario: Path, directory: Path, platform: Platform, calls: int
) -> sipp_party.SippRun:
    """SIPp from the carrier's address calling DID +33184000001 through host C, 2 calls/s, 1 s each
    (1001 takes 5 calls at once, counted over every host). A 180 read after the 200 (two workers of
    C relaying them, UDP keeps no order) is ignored, not a failure."""
    directory.mkdir(parents=True, exist_ok=True)
    rendered = directory / scenario.name
    rendered.write_text(scenario.read_text(encoding="iso-8859-1"), encoding="iso-8859-1")
    cmd = [sipp, f"{C}:{platform.ports[C]}", "-sf", str(rendered), "-s", "+33184000001", "-i", CARRIER,
           "-p", str(platform.carrier_port), "-m", str(calls), "-r", "2", "-d", "1000", "-l", "100",
           "-recv_timeout", "60000", "-timeout", "140s", "-nostdin", "-trace_err",
           "-default_behaviors", "all,-abortunexp"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=directory, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)  # fmt: skip
    run = sipp_party.SippRun(proc, directory)
    sipp_party._running.append(run)
    return run
