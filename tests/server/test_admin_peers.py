"""The admin API's questions between workers (server.admin_peers) over a real worker channel (AF_UNIX
socketpairs, as the master makes them): answers larger than a frame come back whole, refusals carry
their status, a silent worker is reported unavailable after the timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.admin_peers import AdminPeers, AdminRefused, PeerUnavailable
from server.worker_channel import Channel, decode_frame, encode_payload, make_inboxes

pytestmark = pytest.mark.timeout(20)


async def answer(op: str, args: dict[str, Any]) -> Any:
    if op == "big":
        return [{"call_id": f"c{i}", "pad": "x" * 200} for i in range(int(args["n"]))]
    if op == "no":
        raise AdminRefused(404, "no call 'x'")
    if op == "slow":
        await asyncio.sleep(10)
    raise RuntimeError("boom")


@pytest.fixture
async def pair() -> AsyncIterator[tuple[AdminPeers, AdminPeers]]:
    inboxes = make_inboxes(2)
    channels = [Channel(inboxes[i][0], {j: inboxes[j][1] for j in range(2) if j != i}) for i in range(2)]
    peers = []
    for i, channel in enumerate(channels):

        def send(dest: int, kind: int, payload: bytes, channel: Channel = channel) -> bool:
            return channel.send(dest, encode_payload(kind, payload))

        p = AdminPeers(i, 2, send, answer, timeout=1.0)

        def on_frame(frame: bytes, p: AdminPeers = p) -> None:
            kind, _, data = decode_frame(frame)
            p.receive(kind, data)

        channel.on_frame = on_frame
        channel.start()
        peers.append(p)
    try:
        yield peers[0], peers[1]
    finally:
        for p in peers:
            await p.close()
        for c in channels:
            c.close()


async def test_a_large_answer_comes_back_in_parts(pair: tuple[AdminPeers, AdminPeers]) -> None:
    zero, _ = pair
    calls = await zero.ask(1, "big", {"n": 2000})  # ~450 KB of JSON: five frames
    assert len(calls) == 2000 and calls[-1]["call_id"] == "c1999"
    assert await zero.ask_others("big", {"n": 1}) == {1: [{"call_id": "c0", "pad": "x" * 200}]}


async def test_refusals_failures_and_silence(pair: tuple[AdminPeers, AdminPeers]) -> None:
    zero, one = pair
    with pytest.raises(AdminRefused) as refused:
        await zero.ask(1, "no")
    assert (refused.value.status, refused.value.message) == (404, "no call 'x'")
    with pytest.raises(PeerUnavailable, match="boom"):
        await one.ask(0, "crash")
    with pytest.raises(PeerUnavailable, match="no answer"):
        await zero.ask(1, "slow")
    answers = await zero.ask_others("slow")
    assert isinstance(answers[1], PeerUnavailable)
