"""The hand-off channel between workers: frames carry a message and its Flow exactly; batches split back
into their frames; over real socketpairs frames arrive in order, also when the receiver's buffer is
full for a while (the sender queues, then drains)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from server.worker_channel import (
    DELIVER,
    LOCATION,
    WRITE,
    Channel,
    ChannelError,
    decode_frame,
    encode_location,
    encode_message,
    make_inboxes,
    pack_batch,
    unpack_batch,
)
from sipcore.flow import Flow
from sipcore.waiting import within

SIP = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\nv=0\r\n"


@pytest.mark.parametrize(
    "flow",
    [
        Flow("udp", ("203.0.113.7", 5062), ("0.0.0.0", 5060)),
        Flow("tcp", ("198.51.100.1", 40001), ("192.0.2.10", 5070), "w1-tcp-42"),
        Flow("udp", ("2001:db8::1", 5060), ("::", 5060)),
        Flow("tcp", ("::1", 65535), ("::1", 1), "w0-tcp-1"),
    ],
)
@pytest.mark.parametrize("kind", [DELIVER, WRITE])
def test_message_frames_round_trip(kind: int, flow: Flow) -> None:
    assert decode_frame(encode_message(kind, SIP, flow)) == (kind, flow, SIP)


def test_empty_payload_and_location_frames() -> None:
    flow = Flow("udp", ("1.2.3.4", 1), ("5.6.7.8", 2))
    assert decode_frame(encode_message(DELIVER, b"", flow)) == (DELIVER, flow, b"")
    assert decode_frame(encode_location(b"\x93\x01\x02\x03")) == (LOCATION, None, b"\x93\x01\x02\x03")


def test_flow_fields_too_long_are_refused() -> None:
    with pytest.raises(ChannelError):
        encode_message(DELIVER, SIP, Flow("tcp", ("h" * 300, 1), ("l", 2), "c"))


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x09rest",  # unknown kind
        bytes((DELIVER,)) + b"\x00\x00",  # header cut short
        encode_message(DELIVER, b"", Flow("udp", ("10.0.0.1", 1), ("10.0.0.2", 2)))[:12],  # flow cut short
        bytes((WRITE, 7, 0, 1, 0, 2, 0, 0, 0)),  # unknown transport
        bytes((DELIVER, 0, 0, 1, 0, 2, 2, 0, 0)) + b"\xff\xfe",  # host not UTF-8
    ],
)
def test_unreadable_frames_raise_channel_error(frame: bytes) -> None:
    with pytest.raises(ChannelError):
        decode_frame(frame)


def test_batches_split_back_into_their_frames() -> None:
    frames = [b"a", b"bb" * 1000, encode_location(b"x"), bytes(range(256))]
    assert unpack_batch(pack_batch(frames)) == frames
    assert unpack_batch(memoryview(pack_batch(frames[:1]))) == frames[:1]
    assert unpack_batch(b"") == []


@pytest.mark.parametrize(
    "datagram", [b"\x00\x00\x00", b"\x00\x00\x00\x05abc", b"\x00\x00\x00\x00", b"\x00\x00\x00\x01a\x00"]
)
def test_cut_batches_raise_channel_error(datagram: bytes) -> None:
    with pytest.raises(ChannelError):
        unpack_batch(datagram)


def _pair(inboxes: list[tuple[socket.socket, socket.socket]]) -> tuple[Channel, Channel]:
    """Two workers' channels over real socketpairs (as the master makes them)."""
    a = Channel(inboxes[0][0], {1: inboxes[1][1]})
    b = Channel(inboxes[1][0], {0: inboxes[0][1]})
    return a, b


async def _collect(channel: Channel, count: int, timeout: float = 5.0) -> list[bytes]:
    got: list[bytes] = []
    done = asyncio.Event()

    def on_frame(frame: bytes) -> None:
        got.append(frame)
        if len(got) >= count:
            done.set()

    channel.on_frame = on_frame
    channel.start()
    await within(done.wait(), timeout)
    return got


async def test_frames_arrive_in_order_and_batched() -> None:
    a, b = _pair(make_inboxes(2))
    try:
        frames = [f"frame-{n}".encode() for n in range(500)]
        for frame in frames:
            assert a.send(1, frame)
        assert a.datagrams_sent == 0  # gathered until the loop iteration ends
        assert await _collect(b, len(frames)) == frames
        assert a.sent == len(frames) and a.datagrams_sent < 10
        assert b.received == len(frames)
    finally:
        a.close()
        b.close()


async def test_a_full_receiver_makes_the_sender_queue_then_drain_in_order() -> None:
    inboxes = make_inboxes(2)
    for sock in (inboxes[1][0], inboxes[1][1]):  # a small buffer between worker 0 and worker 1
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 300_000)  # room for one datagram
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 300_000)
    a, b = _pair(inboxes)
    try:
        frames = [bytes([n % 251]) * 60_000 for n in range(40)]  # ~2.4 MB: far more than the buffer
        for frame in frames:
            assert a.send(1, frame)
        await asyncio.sleep(0.05)
        assert a.backlog > 0  # the receiver has not read yet: the sender waits for room
        got = await _collect(b, len(frames))
        assert got == frames
        await asyncio.sleep(0.05)
        assert a.backlog == 0 and a.dropped == 0
    finally:
        a.close()
        b.close()


async def test_unknown_destination_and_oversize_frames_are_dropped() -> None:
    a, b = _pair(make_inboxes(2))
    try:
        assert not a.send(5, b"x")
        assert not a.send(1, b"x" * (200 * 1024))
        assert a.dropped == 2
    finally:
        a.close()
        b.close()


async def test_a_bad_frame_handler_does_not_stop_the_reader() -> None:
    a, b = _pair(make_inboxes(2))
    try:
        seen: list[bytes] = []
        done = asyncio.Event()

        def on_frame(frame: bytes) -> None:
            if frame == b"boom":
                raise RuntimeError("handler failed")
            seen.append(frame)
            if frame == b"after":
                done.set()

        b.on_frame = on_frame
        b.start()
        a.send(1, b"before")
        a.send(1, b"boom")
        a.send(1, b"after")
        await within(done.wait(), 5)
        assert seen == [b"before", b"after"]
    finally:
        a.close()
        b.close()
