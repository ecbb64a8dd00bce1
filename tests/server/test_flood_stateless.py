"""Floods cost no memory: OPTIONS to the server itself is answered statelessly (RFC 3261 §8.2.7: a
retransmission gets the same answer again, no transaction kept for timer J), and the server
transaction table has a hard cap: a full table ends its oldest lingering transaction for a new
request, and answers a stateless 503 (counted) only when all it holds are still in progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from benchmarks.flood_udp import FLOODER, flood_messages
from server import metrics
from server.app import Application, load_application_config
from server.sip_server import ServerSettings, SipHandlers, SipServer
from sipcore.message import parse
from sipcore.transaction import TableFull, TransactionLayer
from tests.conftest import free_port
from tests.registrar_sip.configs import write_config
from tests.server.wire import options, udp_client
from tests.sipcore.test_transaction_support import SOURCE, make_request


async def test_options_to_the_server_is_answered_statelessly_and_again_the_same(
    sip_server: SipServer,
) -> None:
    host, port = sip_server.transports.udp_addresses[0]
    client = await udp_client()
    try:
        request = options(host, port, client.port)
        client.send(request, (host, port))
        first = await client.recv()
        client.send(request, (host, port))  # a retransmission
        again = await client.recv()
        assert first is not None and first.startswith(b"SIP/2.0 200")
        assert again == first  # same To tag, same everything
        for _ in range(50):  # a small flood of distinct ones
            client.send(options(host, port, client.port), (host, port))
        for _ in range(50):
            data = await client.recv()
            assert data is not None and data.startswith(b"SIP/2.0 200")
        assert len(sip_server.transactions) == 0 and sip_server.transactions.stats["server_created"] == 0
    finally:
        client.close()


@asynccontextmanager
async def _capped(handlers: Callable[[SipServer], SipHandlers] | None) -> AsyncIterator[SipServer]:
    """A started server holding two server transactions at most."""
    port = free_port()
    settings = ServerSettings(
        udp=[f"127.0.0.1:{port}"], tcp=[], metrics_address=None, max_server_transactions=2
    )
    server = SipServer(settings, handlers)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def capped_server() -> AsyncIterator[SipServer]:
    """No proxy: a relayed request is answered 403 at once and its transaction lingers for timer J."""
    async with _capped(None) as server:
        yield server


@pytest.fixture
async def capped_busy_server() -> AsyncIterator[SipServer]:
    """A proxy that never answers: the transactions stay in progress."""
    async with _capped(lambda _server: SipHandlers(proxy=lambda _request, _flow: None)) as server:
        yield server


async def test_a_table_full_of_lingering_transactions_ends_the_oldest_for_a_new_request(
    capped_server: SipServer,
) -> None:
    host, port = capped_server.transports.udp_addresses[0]
    client = await udp_client()
    ended_before = metrics.TRANSACTIONS_ENDED_EARLY.value()
    refused_before = metrics.TRANSACTIONS_REFUSED.value()
    try:
        requests = [options(host, port, client.port, ruri="sip:bob@elsewhere.example") for _ in range(3)]
        answers = []
        for data in requests:
            client.send(data, (host, port))
            got = await client.recv()
            assert got is not None and got.startswith(b"SIP/2.0 403")
            answers.append(got)
        assert capped_server.transactions.active_server == 2
        assert metrics.TRANSACTIONS_ENDED_EARLY.value() == ended_before + 1
        assert metrics.TRANSACTIONS_REFUSED.value() == refused_before
        client.send(requests[2], (host, port))  # a retransmission of one still held: the same answer
        assert await client.recv() == answers[2]
        assert capped_server.transactions.stats["retransmissions_absorbed"] == 1
    finally:
        client.close()


async def test_a_table_full_of_transactions_in_progress_refuses_new_requests_503_and_still_matches_them(
    capped_busy_server: SipServer,
) -> None:
    server = capped_busy_server
    host, port = server.transports.udp_addresses[0]
    client = await udp_client()
    refused_before = metrics.TRANSACTIONS_REFUSED.value()
    try:
        first = options(host, port, client.port, ruri="sip:bob@elsewhere.example")
        for data in (first, options(host, port, client.port, ruri="sip:bob@elsewhere.example")):
            client.send(data, (host, port))
        for _ in range(100):
            if server.transactions.active_server == 2:
                break
            await asyncio.sleep(0.01)
        assert server.transactions.active_server == 2
        client.send(options(host, port, client.port, ruri="sip:carol@elsewhere.example"), (host, port))
        got = await client.recv()
        assert got is not None and got.startswith(b"SIP/2.0 503")
        assert parse(got).headers.get("retry-after") == "5"
        assert server.transactions.active_server == 2  # nothing kept for the refused one
        assert metrics.TRANSACTIONS_REFUSED.value() == refused_before + 1
        client.send(first, (host, port))  # a retransmission of a live one is matched, not refused
        client.send(options(host, port, client.port), (host, port))  # to the server itself: no transaction
        got = await client.recv()
        assert got is not None and got.startswith(b"SIP/2.0 200")  # the retransmission got nothing
        assert server.transactions.stats["retransmissions_absorbed"] == 1
        assert metrics.TRANSACTIONS_REFUSED.value() == refused_before + 1
    finally:
        client.close()


def test_layer_cap_returns_table_full_and_counts_it() -> None:
    layer = TransactionLayer(max_server=1)
    layer.on_request(make_request("OPTIONS"), SOURCE, 0.0)
    other = make_request("BYE", branch="z9hG4bKother")
    out = layer.on_request(other, SOURCE, 0.0)
    assert out == [TableFull(other, SOURCE)]
    assert layer.active_server == 1 and layer.stats["refused_table_full"] == 1
    assert layer.on_request(make_request("OPTIONS"), SOURCE, 0.1) == []  # the live one still matches


async def test_a_flood_of_uncredentialed_invites_leaves_nothing_behind(tmp_path: Path) -> None:
    """Each is answered 407 without a transaction, and no per-call table keeps an entry for it (the
    call-setup timer did, once: +1 MB/s under a flood, never taken back)."""
    port = free_port()
    config = write_config(tmp_path, port, guard="{rate_limit: {enabled: false}}")
    app = Application(load_application_config(str(config)))
    await app.start()
    client = await udp_client()
    try:
        messages = flood_messages("invite", "127.0.0.1", port, 300)
        via = f"127.0.0.1:{client.port};rport;".encode()  # answered to this client
        for i, data in enumerate(messages):
            client.send((data % (i, i)).replace(FLOODER.encode() + b":5099;", via), ("127.0.0.1", port))
            if i % 50 == 49:
                for _ in range(50):
                    got = await client.recv()
                    assert got is not None and got.startswith(b"SIP/2.0 407")
        assert len(app.sip.transactions) == 0
        assert len(app.proxy._setup) == 0
    finally:
        client.close()
        await app.close()
