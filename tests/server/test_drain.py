"""SIGTERM drains (`Application.drain`), over real sockets with `sipcore serve` in a subprocess, with
one process and with two workers (each drains the calls it owns): STOPPING=1 at once, new INVITEs get
503 with Retry-After, REGISTER is still served, calls the phones end during the drain end normally,
the rest are hung up by the server (BYE to both parties) at ``server.drain_timeout``, and every call
has exactly one CDR in the SQLite database once the server has exited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sipcore.message import Request, Response
from tests.proxy_sip.configs import password
from tests.proxy_sip.ua import Ua
from tests.server.lifecycle_helpers import cdr_rows, establish, lifecycle_config, serve_process
from tests.server.workers_helpers import children_of, owned_by

pytestmark = pytest.mark.timeout(90)

DRAIN = 2  # server.drain_timeout in these tests


def _bye_for(ua: Ua, call_id: str) -> Request | None:
    return next((m for m in ua.requests("BYE") if m.call_id == call_id), None)


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_calls_then_hangs_up_the_rest_with_one_cdr_each(
    tmp_path: Path, workers: int
) -> None:
    trunk = await Ua.open("carrier", "", ("127.0.0.1", 9), host="127.0.0.2")
    config = lifecycle_config(tmp_path, trunk.port, drain_timeout=DRAIN)
    phones: list[Ua] = [trunk]
    try:
        async with serve_process(config, workers) as server:
            pairs = []
            for caller_user, callee_user in (("1001", "1002"), ("1003", "1005")):
                caller = await Ua.open(caller_user, password(caller_user), server.address)
                callee = await Ua.open(callee_user, password(callee_user), server.address)
                phones += [caller, callee]
                await caller.register(timeout=5)
                await callee.register(timeout=5)
                pairs.append((caller, callee))
            # One call the phones end during the drain and one the server must end, per owning worker.
            by_phone, by_server = [], []
            for owner in range(workers):
                for kept, (caller, callee) in ((by_phone, pairs[0]), (by_server, pairs[1])):
                    call_id = owned_by(owner, workers, "drain-")
                    kept.append(
                        (caller, callee, call_id, await establish(caller, callee.user, call_id, callee))
                    )
            loop = asyncio.get_running_loop()
            server.terminate()
            sigterm_at = loop.time()
            assert await server.notice(5) == b"STOPPING=1"
            # The master reports STOPPING=1 as it forwards SIGTERM: each worker starts its drain when
            # its loop takes the signal, a moment later.
            await asyncio.sleep(0.3)

            # A new call is refused at once, with Retry-After; the phone tries again elsewhere or later.
            newcomer = pairs[0][0]
            dlg = newcomer.invite("1002")
            refused = await newcomer.response(dlg.call_id, timeout=5)
            assert refused.status == 503, refused.start_line()
            assert int(refused.headers.get("retry-after") or 0) >= 1
            # Registrations are still served, whichever worker owns the AOR.
            for caller, callee in pairs:
                await caller.register(timeout=5)
                await callee.register(timeout=5)

            # The phones end their calls: relayed as usual, answered 200.
            for caller, callee, call_id, dlg in by_phone:
                caller.in_dialog(dlg, "BYE")
                ok = await caller.response(call_id, "BYE", timeout=5)
                assert ok.status == 200, ok.start_line()
                assert _bye_for(callee, call_id) is not None

            # The others: BYE from the server to both parties at the drain's deadline.
            for caller, callee, call_id, _ in by_server:
                for ua in (caller, callee):
                    bye = await ua.expect(
                        lambda m, c=call_id: isinstance(m, Request) and m.method == "BYE" and m.call_id == c,
                        DRAIN + 5,
                        f"BYE of {call_id}",
                    )
                    assert DRAIN - 0.3 <= ua.when(bye) - sigterm_at < DRAIN + 3
            assert await server.wait(30) == 0, server.stderr.decode(errors="replace")[-3000:]
            assert children_of(server.proc.pid) == []

        # The phones' hang-ups reached the other party, nobody got a BYE from the server for them.
        for caller, _callee, call_id, _ in by_phone:
            assert _bye_for(caller, call_id) is None
        rows = cdr_rows(tmp_path / "state")
        ids = [r["call_id"] for r in rows]
        expected = {c for _, _, c, _ in by_phone + by_server}
        assert sorted(ids) == sorted(expected), ids  # exactly one CDR per call, none for the 503
        assert all(r["disposition"] == "answered" for r in rows)
        hung_up = {r["call_id"]: r["hangup_by"] for r in rows}
        assert {hung_up[c] for _, _, c, _ in by_phone} == {"caller"}
        assert {hung_up[c] for _, _, c, _ in by_server} == {"system"}
        ended_by_server = {e["call_id"] for e in server.log_events("call_ended_by_shutdown")}
        assert ended_by_server == {c for _, _, c, _ in by_server}
        assert all(e["hangup_by"] == "system" for e in server.log_events("call_ended_by_shutdown"))
        end = {r["call_id"]: int(r["end_us"]) for r in rows}  # type: ignore[call-overload]
        assert min(end[c] for _, _, c, _ in by_server) - max(end[c] for _, _, c, _ in by_phone) > 1_000_000
    finally:
        for ua in phones:
            ua.close()


async def test_sigterm_with_no_call_in_progress_exits_at_once(tmp_path: Path) -> None:
    config = lifecycle_config(tmp_path, 9, drain_timeout=30)
    async with serve_process(config, 1) as server:
        loop = asyncio.get_running_loop()
        server.terminate()
        started = loop.time()
        assert await server.wait(20) == 0
        assert loop.time() - started < 10  # nothing to wait for: not the 30 s of drain_timeout


async def test_a_call_still_ringing_at_the_deadline_is_answered_503_and_its_branches_cancelled(
    tmp_path: Path,
) -> None:
    config = lifecycle_config(tmp_path, 9, drain_timeout=1)
    async with serve_process(config, 1) as server:
        caller = await Ua.open("1001", password("1001"), server.address)
        callee = await Ua.open("1002", password("1002"), server.address)
        callee.mode = "ring"
        try:
            await caller.register(timeout=5)
            await callee.register(timeout=5)
            dlg = caller.invite("1002", call_id="ringing-call")
            first = await caller.response(dlg.call_id, timeout=5)
            assert first.status == 407
            caller.ack(dlg, first)
            from sipcore.digest import build_authorization

            value = build_authorization(first.headers.get("proxy-authenticate") or "", username="1001",
                                        password=password("1001"), method="INVITE",
                                        uri="sip:1002@demo.sipcore.test", cnonce="ab")  # fmt: skip
            caller.invite("1002", 2, f"Proxy-Authorization: {value}\n", dlg.call_id, dlg.from_tag)
            await callee.request("INVITE", timeout=5)
            server.terminate()
            final = await caller.response(dlg.call_id, timeout=10)
            assert final.status == 503, final.start_line()
            assert (await callee.request("CANCEL", timeout=5)).call_id == dlg.call_id
            assert await server.wait(30) == 0
        finally:
            caller.close()
            callee.close()
    rows = cdr_rows(tmp_path / "state")
    assert [(r["call_id"], r["disposition"], r["sip_status"], r["hangup_by"]) for r in rows] == [
        ("ringing-call", "failed", 503, "system")
    ]
    assert not any(
        isinstance(m, Response) and m.status == 200 for m in caller.received if m.call_id == "ringing-call"
    )
