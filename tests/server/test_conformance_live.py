"""The conformance runner (../shared/conformance/run_corpus.py) against the live server, UDP and TCP."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from server.sip_server import SipServer
from sipcore.waiting import within

RUNNER = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "run_corpus.py"
# Expected when the Request-URI names the server itself or another domain: the manifest's codes are
# role-dependent; these are the roles sipcore plays for each non-local message.
FOREIGN_DOMAIN = 403


async def run_corpus(server: SipServer, transport: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    host, port = (server.transports.tcp_addresses if transport == "tcp" else server.transports.udp_addresses)[
        0
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(RUNNER), "--host", host, "--port", str(port), "--transport", transport,
        "--timeout-ms", "400", "--unique-branch", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await within(proc.communicate(), timeout=120)
    assert out, err.decode()
    return proc.returncode or 0, json.loads(out)


@pytest.mark.timeout(150)
async def test_corpus_over_tcp(sip_server: SipServer) -> None:
    rc, report = await run_corpus(sip_server, "tcp")
    assert rc == 0, "server did not answer the final OPTIONS"
    by_name = {r["name"] + r["rfc_section"]: r for r in report["results"]}
    assert len(by_name) == 61
    for r in report["results"]:
        assert not r["hint"].startswith("CHECK"), r
        if r["outcome"] == "discard":
            assert r["final_code"] is None, r
        elif r["outcome"] == "reject" and r["name"] != "clerr":  # clerr: TCP waits for the body
            assert r["final_code"] in r["codes"], r
        elif r["outcome"] == "accept":
            assert r["final_code"] not in (400, None), r
    assert by_name["clerr3.1.2.2"]["final_code"] is None


@pytest.mark.timeout(150)
async def test_corpus_over_udp_server_survives(sip_server: SipServer) -> None:
    rc, report = await run_corpus(sip_server, "udp")
    assert rc == 0, "server did not answer the final OPTIONS"
    for r in report["results"]:
        assert not r["hint"].startswith("CHECK"), r
        if r["outcome"] == "discard":
            assert r["final_code"] is None, r
