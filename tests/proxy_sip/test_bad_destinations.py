"""Issue 20: messages that lead to a malformed or name destination (``127.0``, ``127.y.0.1``, ``12``)
fail alone and are counted; the datagrams queued with them in the same loop iteration, for other
clients, still leave. Run under uvloop (what ``serve`` installs): its ``sendto`` raises ValueError
for a non-IP host, which used to escape ``flush_udp`` to the event loop and drop the whole batch.
A trunk given by name is still probed: the monitor resolves it (off the loop) before sending."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest
import structlog

from server import metrics
from tests.conftest import free_port
from tests.proxy_sip.conftest import platform
from tests.proxy_sip.test_trunk_failover import carriers
from tests.proxy_sip.ua import Ua

uvloop = pytest.importorskip("uvloop")

BAD_HOSTS = ("127.0", "127.y.0.1", "12")
GOOD_REQUESTS = 30


def _options(ua: Ua, branch: str) -> str:
    return (
        f"OPTIONS sip:{ua.server[0]}:{ua.server[1]} SIP/2.0\n"
        f"Via: SIP/2.0/UDP {ua.host}:{ua.port};branch={branch};rport\nMax-Forwards: 70\n"
        f"From: <sip:{ua.user}@demo.sipcore.test>;tag={secrets.token_hex(4)}\n"
        f"To: <sip:{ua.server[0]}>\nCall-ID: {secrets.token_hex(8)}\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
    )


def _bad_messages(server: tuple[str, int], me: tuple[str, int], host: str) -> list[str]:
    """Three ways to a bad host: the server's own answer (Via maddr), an in-dialog request relayed by
    its Route, a stray 2xx forwarded by its second Via."""
    sh, sp = server
    tag, call_id = secrets.token_hex(4), secrets.token_hex(8)
    via = f"SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bK{secrets.token_hex(6)};rport"
    common = f"From: <sip:evil@demo.sipcore.test>;tag={tag}\nTo: <sip:x@demo.sipcore.test>;tag=t{tag}\n"
    return [
        f"OPTIONS sip:{sh}:{sp} SIP/2.0\nVia: {via};maddr={host}\nMax-Forwards: 70\n{common}"
        f"Call-ID: {call_id}a\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
        f"BYE sip:x@{host}:5060 SIP/2.0\nVia: {via}\nRoute: <sip:{host};lr>\nMax-Forwards: 70\n{common}"
        f"Call-ID: {call_id}b\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        f"SIP/2.0 200 OK\nVia: SIP/2.0/UDP {sh}:{sp};branch=z9hG4bK{secrets.token_hex(6)}\n"
        f"Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bK{secrets.token_hex(6)}\n{common}"
        f"Call-ID: {call_id}c\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
    ]


def test_bad_destinations_fail_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        answered, branches, before, logs = runner.run(_scenario(tmp_path))
    assert answered == set(branches)  # every good request answered, none lost with the bad ones
    assert metrics.UDP_SEND_FAILED.value("not_ip") > before
    assert metrics.UDP_SEND_FAILED.value("error") == 0
    assert not [e for e in logs if e.get("exc_info") or e.get("log_level") in ("error", "critical")]
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def _scenario(tmp_path: Path) -> tuple[set[str], list[str], int, list[dict[str, Any]]]:
    """A good client's OPTIONS interleaved, datagram by datagram, with a bad client's messages."""
    async with platform(tmp_path) as running:
        good = await Ua.open("good", "", running.address)
        running.uas.append(good)
        bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        bad.bind(("127.0.0.1", 0))
        bad.setblocking(False)
        me = bad.getsockname()
        before = metrics.UDP_SEND_FAILED.value("not_ip")
        branches = [f"z9hG4bK{secrets.token_hex(6)}" for _ in range(GOOD_REQUESTS)]
        try:
            with structlog.testing.capture_logs() as logs:
                for round_, branch in enumerate(branches):  # interleaved, sent without yielding
                    good.send(_options(good, branch))
                    for text in _bad_messages(running.address, me, BAD_HOSTS[round_ % len(BAD_HOSTS)]):
                        bad.sendto(text.replace("\n", "\r\n").encode(), running.address)
                deadline = asyncio.get_running_loop().time() + 5.0
                answered: set[str] = set()
                while len(answered) < GOOD_REQUESTS and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                    answered = {m.top_via.branch for m in good.received if getattr(m, "status", 0) == 200}
                await asyncio.sleep(0.3)  # the relayed BYEs' lookups end and their answers go out
        finally:
            bad.close()
    return answered, branches, before, logs


async def test_a_trunk_addressed_by_name_is_probed_at_its_resolved_address(tmp_path: Path) -> None:
    """The trunk monitor's probes are resolved first (not refused by the transport for being a name)."""
    port = free_port()
    carrier = await Ua.open("a", "", ("127.0.0.1", 0), host="127.0.0.1", port=port)

    def trunks(ports: dict[str, int]) -> str:
        return f"  a: {{address: 'localhost:{port}', probe_interval: 1, probe_failures: 2}}\n"

    try:
        async with carriers(tmp_path, "  outbound_trunks: [{trunk: a}]\n", trunks, ("a",), {"a": port}) as (
            proxy,
            _,
        ):
            probe = await carrier.request("OPTIONS", timeout=3)
            assert probe.uri == f"sip:localhost:{port}"
            await asyncio.sleep(1.2)  # its answer (200) keeps the trunk in rotation
            assert "a" not in proxy.app.proxy.controller.down_trunks
            assert proxy.app.sip.transports.stats.udp_not_ip == 0
    finally:
        carrier.close()
