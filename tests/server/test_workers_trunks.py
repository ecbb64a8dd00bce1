"""Trunk probes and outbound registration with ``server.workers: 2``, over the wire: every worker
probes the carrier with its own Call-ID and hears its own answers (no retransmission: the answer
reached the worker that sent the probe, by the Call-ID ownership), and the carrier is registered
once (worker 0), its 200 reaching the registering worker (refreshed with CSeq + 1, never
retransmitted)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pytest

from sipcore.message import Request
from tests.conftest import free_port
from tests.proxy_sip.configs import proxy_yaml
from tests.proxy_sip.ua import Ua
from tests.server.workers_helpers import serve

pytestmark = pytest.mark.timeout(60)
TRUNK_HOST = "127.0.0.2"


def _reply_ok(ua: Ua, req: Request) -> None:
    lines = ["SIP/2.0 200 OK"] + [f"Via: {v}" for v in req.headers.get_all("via")]
    lines += [f"From: {req.headers.get('from')}", f"To: {req.headers.get('to')};tag=reg1"]
    lines += [f"Call-ID: {req.call_id}", f"CSeq: {req.headers.get('cseq')}"]
    lines += [f"Contact: {req.headers.get('contact')};expires=2"]
    ua.send("\n".join(lines) + "\nContent-Length: 0\n\n")


async def test_each_worker_probes_and_hears_its_answers_and_one_registers(tmp_path: Path) -> None:
    port = free_port()
    carrier = await Ua.open("carrier", "", ("127.0.0.1", port), host=TRUNK_HOST)
    text = proxy_yaml(port, carrier.port, tmp_path / "state")
    start, end = text.index("  outbound_trunk: carrier\n"), text.index("rating:\n")
    trunk = (
        f"  outbound_trunk: carrier\ntrunks:\n  carrier: {{address: '{TRUNK_HOST}:{carrier.port}', "
        "probe_interval: 1, register: {username: trunkuser, password: trunkpw, expires: 2}}\n"
    )
    text = text[:start] + trunk + text[end:]
    (tmp_path / "rates.csv").write_text(
        "prefix,destination,category,cost_per_minute\n+33,France,fixed,0.01\n"
    )
    config = tmp_path / "proxy.yaml"
    config.write_text(text, encoding="utf-8")

    async def registrar() -> None:
        while True:
            _reply_ok(carrier, await carrier.request("REGISTER", timeout=30))

    try:
        async with serve(config, workers=2, port=port):
            task = asyncio.get_running_loop().create_task(registrar())
            await asyncio.sleep(4.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        carrier.close()
    probes = Counter((m.call_id, m.cseq[0]) for m in carrier.requests("OPTIONS"))
    per_worker = Counter(call_id for call_id, _ in probes)
    assert len(per_worker) == 2 and min(per_worker.values()) >= 3, per_worker  # one Call-ID per worker
    assert set(probes.values()) == {1}, probes  # answered where sent: never retransmitted
    registers = carrier.requests("REGISTER")
    assert len({r.call_id for r in registers}) == 1  # one registration, by worker 0
    cseqs = [r.cseq[0] for r in registers]
    assert len(cseqs) >= 3 and cseqs == list(range(cseqs[0], cseqs[0] + len(cseqs))), cseqs  # refreshed
