"""Two workers on one UDP socket with the replicated memory location store (no Redis): phones register
whichever worker reads their REGISTER, calls go through whichever worker owns their Call-ID, and a
TCP-registered phone is reachable whichever worker holds its connection.

Users and Call-IDs are chosen so that each worker owns some of them: whichever worker the kernel
hands a datagram to, some messages must cross to their owner (the hand-off counters prove it)."""

from __future__ import annotations

import asyncio
import secrets
import zlib
from pathlib import Path

import pytest

from sipcore.digest import build_authorization
from sipcore.message import Response
from sipcore.waiting import within
from tests.conftest import free_port
from tests.proxy_sip.configs import DOMAIN, password, write_config
from tests.proxy_sip.ua import Dialog, Ua
from tests.server.wire import udp_client
from tests.server.workers_helpers import children_of, metric, owned_by, serve

pytestmark = pytest.mark.timeout(90)

WORKERS = 2
# Extensions of the test configuration, grouped by the worker that owns their REGISTERs.
USERS = ["1001", "1002", "1005", "1007"]  # plain phones (1007 forwards only when unregistered)
BY_OWNER = {w: [u for u in USERS if zlib.crc32(u.encode()) % WORKERS == w] for w in range(WORKERS)}


def config(tmp_path: Path, state_file: str = "null") -> Path:
    location = f"{{backend: memory, state_file: {state_file}}}"
    return write_config(tmp_path, free_port(), free_port(), location=location)


async def call(caller: Ua, callee: Ua, call_id: str) -> Dialog:
    """INVITE (with its 407 round) → 180 → 200 → ACK → BYE → 200, on the Call-ID given."""
    dlg = caller.invite(callee.user, call_id=call_id)
    first = await caller.response(call_id, final=True, timeout=5)
    assert first.status == 407, first.start_line()
    caller.ack(dlg, first)
    value = build_authorization(first.headers.get("proxy-authenticate") or "", username=caller.user,
                                password=caller.password, method="INVITE", uri=f"sip:{callee.user}@{DOMAIN}",
                                cnonce="c0ffee")  # fmt: skip
    dlg = caller.invite(callee.user, 2, f"Proxy-Authorization: {value}\n", call_id, dlg.from_tag)
    # The callee's 180 and 200 leave back to back and may be read by different workers: the 200
    # can reach the call's owner, and the caller, first (UDP reordering, legal). Both arrive.
    final = await caller.response(call_id, timeout=5)
    assert final.status == 200, final.start_line()
    ringing = await caller.response(call_id, final=False, timeout=5)
    assert ringing.status in (180, 200), ringing.start_line()
    assert any(isinstance(m, Response) and m.call_id == call_id and m.status == 180 for m in caller.received)
    caller.ack(dlg, final)
    invite = await callee.request("INVITE", timeout=5)
    assert invite.call_id == call_id
    assert (await callee.request("ACK", timeout=5)).call_id == call_id
    caller.in_dialog(dlg, "BYE")
    assert (await callee.request("BYE", timeout=5)).call_id == call_id
    bye_ok = await caller.response(call_id, "BYE", timeout=5)
    assert bye_ok.status == 200, bye_ok.start_line()
    return dlg


async def phone(server: tuple[str, int], user: str, tcp: bool = False) -> Ua:
    ua = await (Ua.open_tcp if tcp else Ua.open)(user, password(user), server)
    await ua.register(timeout=5)
    return ua


def register_bytes(user: str, call_id: str, port: int, cseq: int, auth: str = "") -> bytes:
    return (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id}{cseq};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=f{cseq}\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\n"
        f"Expires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
    ).encode()


def test_the_test_users_are_owned_by_both_workers() -> None:
    assert all(len(users) >= 2 for users in BY_OWNER.values()), BY_OWNER


async def test_register_and_call_across_workers_over_udp(tmp_path: Path) -> None:
    async with serve(config(tmp_path), WORKERS) as served:
        uas = [await phone(served.address, u) for u in USERS]
        try:
            by_user = {ua.user: ua for ua in uas}
            # Every pair of owners: the caller's REGISTER writer, the callee's, and the call's owner
            # differ in some of these, so INVITE/180/200/ACK/BYE cross between the workers.
            for call_owner in range(WORKERS):
                for a_owner in range(WORKERS):
                    caller = by_user[BY_OWNER[a_owner][0]]
                    callee = by_user[BY_OWNER[1 - a_owner][1]]
                    await call(caller, callee, owned_by(call_owner, WORKERS))
            text = await served.metrics()  # worker 0's view
            assert metric(text, "sipcore_worker_handoffs_total", kind="message") > 0
            # Worker 0 wrote the AORs it owns and installed the others' (one snapshot per REGISTER).
            assert metric(text, "sipcore_worker_handoffs_total", direction="out", kind="location") >= 2
            assert metric(text, "sipcore_worker_handoffs_total", direction="in", kind="location") >= 2
        finally:
            for ua in uas:
                ua.close()
        assert await served.stop() == 0, served.stderr.decode()[-2000:]
        assert children_of(served.proc.pid) == []


async def test_a_retransmitted_register_gets_the_same_answer(tmp_path: Path) -> None:
    async with serve(config(tmp_path), WORKERS) as served:
        client = await udp_client()
        try:
            for owner in range(WORKERS):
                user = BY_OWNER[owner][0]
                call_id = secrets.token_hex(8)

                client.send(register_bytes(user, call_id, client.port, 1), served.address)
                challenge = await client.recv(5)
                assert challenge is not None and challenge.startswith(b"SIP/2.0 401"), challenge
                www = next(line.split(b":", 1)[1].strip().decode() for line in challenge.split(b"\r\n")
                           if line.lower().startswith(b"www-authenticate:"))  # fmt: skip
                value = build_authorization(www, username=user, password=password(user), method="REGISTER",
                                            uri=f"sip:{DOMAIN}", cnonce="abc123")  # fmt: skip
                request = register_bytes(user, call_id, client.port, 2, f"Authorization: {value}\r\n")
                answers = []
                for _ in range(3):  # the original and two retransmissions, read by either worker
                    client.send(request, served.address)
                    answers.append(await client.recv(5))
                assert answers[0] is not None and answers[0].startswith(b"SIP/2.0 200"), answers[0]
                assert answers[1] == answers[0] and answers[2] == answers[0]
                assert await client.recv(0.3) is None  # one answer per copy, none doubled
        finally:
            client.close()


async def test_tcp_callee_is_reachable_from_udp_callers_whoever_owns_the_call(tmp_path: Path) -> None:
    async with serve(config(tmp_path), WORKERS) as served:
        callee = await phone(served.address, BY_OWNER[0][0], tcp=True)
        caller = await phone(served.address, BY_OWNER[1][0])
        try:
            for call_owner in (0, 1, 0, 1):
                await call(caller, callee, owned_by(call_owner, WORKERS))
            text = await served.metrics()
            # The connection lives in one worker; the calls the other worker owns were written
            # to it through the holder.
            assert metric(text, "sipcore_worker_handoffs_total", kind="tcp_write") > 0
        finally:
            caller.close()
            callee.close()
        await asyncio.sleep(0.2)  # the connection close reaches the workers (flow dropped)
        assert await served.stop() == 0, served.stderr.decode()[-2000:]


@pytest.mark.redis
async def test_register_and_call_across_workers_with_the_redis_store(tmp_path: Path) -> None:
    """Workers sharing Redis instead of replicating: one node id for all, so a TCP phone's flow (held
    by one worker, registered by another) is the same flow for every worker."""
    import redis.asyncio as aioredis

    prefix = f"sipcore-wk-{secrets.token_hex(6)}:"
    location = f'{{backend: redis, url: "redis://127.0.0.1:6379/0", key_prefix: "{prefix}"}}'
    path = write_config(tmp_path, free_port(), free_port(), location=location)
    try:
        async with serve(path, WORKERS) as served:
            callee = await phone(served.address, BY_OWNER[0][0], tcp=True)
            caller = await phone(served.address, BY_OWNER[1][0])
            try:
                for call_owner in (0, 1, 0, 1):
                    await call(caller, callee, owned_by(call_owner, WORKERS))
            finally:
                caller.close()
                callee.close()
            assert await served.stop() == 0, served.stderr.decode()[-2000:]
    finally:
        client = aioredis.from_url("redis://127.0.0.1:6379/0")
        try:
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def test_registrations_survive_a_restart_through_worker_0s_state_file(tmp_path: Path) -> None:
    path = config(tmp_path, state_file="location.sqlite")
    port = free_port()
    callee = await Ua.open(BY_OWNER[1][0], password(BY_OWNER[1][0]), ("127.0.0.1", port))
    caller = await Ua.open(BY_OWNER[0][0], password(BY_OWNER[0][0]), ("127.0.0.1", port))
    try:
        async with serve(path, WORKERS, port) as served:
            await callee.register(timeout=5)
            await caller.register(timeout=5)
            await asyncio.sleep(0.5)  # worker 0's write-behind flush (every 0.2 s)
            assert await served.stop() == 0, served.stderr.decode()[-2000:]
        async with serve(path, WORKERS, port) as served:  # no REGISTER this time
            for call_owner in range(WORKERS):
                await call(caller, callee, owned_by(call_owner, WORKERS))
    finally:
        caller.close()
        callee.close()


async def test_one_worker_dying_stops_the_server(tmp_path: Path) -> None:
    import os
    import signal

    async with serve(config(tmp_path), WORKERS) as served:
        first, second = children_of(served.proc.pid)
        os.kill(second, signal.SIGKILL)
        await within(served.proc.wait(), 20)
        assert served.proc.returncode != 0
        assert children_of(served.proc.pid) == []
        with pytest.raises(ProcessLookupError):
            os.kill(first, 0)
