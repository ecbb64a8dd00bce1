"""RTP packets, the receive-side stream (latching, sequence, inactivity) and the packetiser."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtp import (
    DropReason,
    RtpDropped,
    RtpError,
    RtpExtension,
    RtpPacket,
    RtpPacketiser,
    RtpReceived,
    RtpStream,
    RtpTimedOut,
)

PHONE = ("192.168.1.23", 10350)  # what the SDP says
NAT = ("198.51.100.7", 61000)  # where the phone's packets really come from
OTHER = ("198.51.100.99", 4000)


def _pkt(seq: int, ts: int = 0, ssrc: int = 0x1234, pt: int = 0) -> bytes:
    return RtpPacket(pt, seq, ts, ssrc, b"\xff" * 160).to_bytes()


# --- packets -------------------------------------------------------------------------------------


def test_parse_minimal_header() -> None:
    data = bytes.fromhex("80e0 1234 00010000 deadbeef") + b"abc"
    p = RtpPacket.parse(data)
    assert (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc) == (
        96,
        True,
        0x1234,
        0x10000,
        0xDEADBEEF,
    )
    assert p.payload == b"abc" and p.csrc == () and p.extension is None and p.padding == 0
    assert p.to_bytes() == data


def test_csrc_extension_and_padding_round_trip() -> None:
    p = RtpPacket(
        8, 65535, 2**32 - 1, 7, b"xy", True, (1, 2, 3), RtpExtension(0xBEDE, b"\x10\xaa\x00\x00"), 4
    )
    data = p.to_bytes()
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[-4:] == b"\x00\x00\x00\x04"
    assert RtpPacket.parse(data) == p


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "shorter"),
        (bytes.fromhex("40000000000000000000000000"), "version 1"),
        (bytes.fromhex("82000000000000000000000000000000"), "CSRCs"),
        (bytes.fromhex("90000000000000000000000000"), "no extension header"),
        (bytes.fromhex("9000000000000000000000000000000100"), "runs past"),
        (bytes.fromhex("a0000000000000000000000000"), "padding of 0"),
        (bytes.fromhex("a000000000000000000000000005"), "padding of 5"),
        (bytes.fromhex("80c80000000000000000000000"), "RTCP"),
    ],
)
def test_malformed_packets(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(data)


def test_build_refuses_impossible_values() -> None:
    with pytest.raises(RtpError):
        RtpPacket(128, 0, 0, 0).to_bytes()
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))).to_bytes()
    with pytest.raises(RtpError):
        RtpPacket(0, 0, 0, 0, extension=RtpExtension(1, b"abc")).to_bytes()


_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127).filter(lambda pt: not 64 <= pt <= 95),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpExtension, st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))
    ),
    padding=st.integers(0, 255),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_packets)
def test_round_trip_property(p: RtpPacket) -> None:
    assert RtpPacket.parse(p.to_bytes()) == p


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=80))
def test_parse_random_bytes_raises_only_rtp_error(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    # What parses re-serialises to the same length (padding bytes become zeros) and the same packet.
    assert len(p.to_bytes()) == len(data)
    assert RtpPacket.parse(p.to_bytes()) == p


# --- stream: latching ----------------------------------------------------------------------------


def _stream(now: float = 0.0, **kw: object) -> RtpStream:
    return RtpStream(payload_types={0, 101}, remote=PHONE, now=now, **kw)  # type: ignore[arg-type]


def test_symmetric_rtp_latches_on_first_valid_packet() -> None:
    s = _stream()
    assert s.remote == PHONE and not s.latched
    got = s.on_datagram(_pkt(100), NAT, 0.02)
    assert isinstance(got, RtpReceived) and got.source == NAT
    assert s.remote == NAT and s.latched and s.ssrc == 0x1234
    dropped = s.on_datagram(_pkt(101), OTHER, 0.04)
    assert dropped == RtpDropped(DropReason.FOREIGN_SOURCE, OTHER, "")
    assert s.remote == NAT


def test_wrong_payload_type_and_garbage_do_not_latch() -> None:
    s = _stream()
    assert s.on_datagram(_pkt(1, pt=8), OTHER, 0.0).reason is DropReason.PAYLOAD_TYPE  # type: ignore[union-attr]
    assert s.on_datagram(b"junk", OTHER, 0.0).reason is DropReason.MALFORMED  # type: ignore[union-attr]
    assert s.remote == PHONE and not s.latched and s.dropped == 2


def test_relatch_after_silence_of_latched_source() -> None:
    s = _stream(relatch_after=2.0)
    s.on_datagram(_pkt(1), NAT, 0.0)
    assert isinstance(s.on_datagram(_pkt(2), OTHER, 1.0), RtpDropped)
    got = s.on_datagram(_pkt(500, ssrc=99), OTHER, 2.5)  # NAT binding changed: new port
    assert isinstance(got, RtpReceived) and s.remote == OTHER and s.ssrc == 99


def test_explicit_relatch_for_reinvite() -> None:
    s = _stream()
    s.on_datagram(_pkt(1), NAT, 0.0)
    s.relatch(("10.9.9.9", 7000))
    assert s.remote == ("10.9.9.9", 7000) and not s.latched
    assert isinstance(s.on_datagram(_pkt(2), OTHER, 0.1), RtpReceived)
    assert s.remote == OTHER


def test_new_ssrc_from_latched_source_restarts_counters() -> None:
    s = _stream()
    for seq in (1, 2, 4):
        s.on_datagram(_pkt(seq), NAT, 0.0)
    assert s.lost == 1
    assert isinstance(s.on_datagram(_pkt(9000, ssrc=5), NAT, 0.1), RtpReceived)
    assert (s.ssrc, s.received, s.lost, s.expected) == (5, 1, 0, 1)


# --- stream: sequence ----------------------------------------------------------------------------


def test_sequence_wrap_at_65535() -> None:
    s = _stream()
    for i, seq in enumerate((65533, 65534, 65535, 0, 1, 2)):
        got = s.on_datagram(_pkt(seq, ts=(2**32 - 320 + 160 * i) % 2**32), NAT, i * 0.02)
        assert isinstance(got, RtpReceived) and not got.late
    assert s.extended_max_seq == 65536 + 2
    assert (s.expected, s.received, s.lost) == (6, 6, 0)


def test_loss_late_and_duplicate_counters() -> None:
    s = _stream()
    for seq in (10, 11, 13, 14):
        s.on_datagram(_pkt(seq), NAT, 0.0)
    assert (s.expected, s.received, s.lost) == (5, 4, 1)
    late = s.on_datagram(_pkt(12), NAT, 0.0)
    assert isinstance(late, RtpReceived) and late.late
    assert (s.lost, s.late) == (0, 1)
    dup = s.on_datagram(_pkt(14), NAT, 0.0)
    assert isinstance(dup, RtpDropped) and dup.reason is DropReason.DUPLICATE
    assert s.duplicates == 1


def test_late_packet_across_the_wrap() -> None:
    s = _stream()
    for seq in (65534, 0, 1):
        s.on_datagram(_pkt(seq), NAT, 0.0)
    got = s.on_datagram(_pkt(65535), NAT, 0.0)
    assert isinstance(got, RtpReceived) and got.late
    assert (s.expected, s.received, s.lost) == (4, 4, 0)


def test_large_jump_needs_two_sequential_packets() -> None:
    s = _stream()
    s.on_datagram(_pkt(100), NAT, 0.0)
    jump = s.on_datagram(_pkt(30000), NAT, 0.02)
    assert isinstance(jump, RtpDropped) and jump.reason is DropReason.SEQUENCE_JUMP
    assert isinstance(s.on_datagram(_pkt(30001), NAT, 0.04), RtpReceived)
    assert (s.expected, s.received) == (1, 1)
    assert isinstance(s.on_datagram(_pkt(30002), NAT, 0.06), RtpReceived)


def test_forward_gap_below_max_dropout_is_loss() -> None:
    s = _stream()
    s.on_datagram(_pkt(100), NAT, 0.0)
    assert isinstance(s.on_datagram(_pkt(2000), NAT, 0.0), RtpReceived)
    assert s.lost == 1899


# --- stream: inactivity --------------------------------------------------------------------------


def test_inactivity_deadline_and_timeout_once() -> None:
    s = _stream(now=100.0, inactivity_timeout=30.0)
    assert s.next_deadline() == 130.0
    assert s.on_timer(129.9) is None
    s.on_datagram(_pkt(1), NAT, 110.0)
    assert s.next_deadline() == 140.0
    assert s.on_timer(139.0) is None
    assert s.on_timer(141.0) == RtpTimedOut(31.0)
    assert s.next_deadline() is None and s.on_timer(200.0) is None
    s.on_datagram(_pkt(2), NAT, 201.0)  # it came back: armed again
    assert s.next_deadline() == 231.0


def test_dropped_packets_do_not_keep_the_call_alive() -> None:
    s = _stream(now=0.0, inactivity_timeout=10.0)
    s.on_datagram(_pkt(1), NAT, 0.0)
    for t in range(1, 12):
        s.on_datagram(_pkt(t + 1), OTHER, float(t) / 10)  # foreign, within relatch window
        s.on_datagram(b"junk", NAT, float(t))
    assert s.on_timer(10.0) == RtpTimedOut(10.0)


def test_timeout_off_while_on_hold() -> None:
    s = _stream(now=0.0)
    s.set_inactivity_timeout(None, 5.0)
    assert s.next_deadline() is None and s.on_timer(1e9) is None
    s.set_inactivity_timeout(60.0, 100.0)
    assert s.next_deadline() == 160.0


# --- packetiser ----------------------------------------------------------------------------------


def test_packetiser_seq_timestamp_marker_and_wrap() -> None:
    tx = RtpPacketiser(payload_type=0, ssrc=42, sequence=65534, timestamp=2**32 - 160)
    a, b, c = (tx.audio(bytes(160)) for _ in range(3))
    assert [(p.sequence, p.timestamp, p.marker) for p in (a, b, c)] == [
        (65534, 2**32 - 160, True),
        (65535, 0, False),
        (0, 160, False),
    ]
    assert {p.ssrc for p in (a, b, c)} == {42}
    tx.pause(5)
    d = tx.audio(bytes(160))
    assert (d.sequence, d.timestamp, d.marker) == (1, 320 + 800, True)


def test_packetiser_feeds_a_stream_without_loss() -> None:
    tx = RtpPacketiser(payload_type=0, ssrc=7, sequence=65000, timestamp=1)
    rx = _stream()
    for i in range(1000):
        assert isinstance(rx.on_datagram(tx.audio(bytes(160)).to_bytes(), NAT, i * 0.02), RtpReceived)
    assert (rx.received, rx.lost, rx.late) == (1000, 0, 0)


def test_packetiser_event_shares_sequence_and_holds_timestamp() -> None:
    tx = RtpPacketiser(payload_type=0, ssrc=7, sequence=10, timestamp=1000)
    tx.audio(bytes(160))
    payloads = [struct.pack("!BBH", 5, 10, 160), struct.pack("!BBH", 5, 0x8A, 400)]
    ev = tx.event(101, payloads, duration=400)
    assert [(p.payload_type, p.sequence, p.timestamp, p.marker) for p in ev] == [
        (101, 11, 1160, True),
        (101, 12, 1160, False),
    ]
    nxt = tx.audio(bytes(160))
    assert (nxt.sequence, nxt.timestamp, nxt.marker) == (13, 1160 + 480, True)


@given(
    st.integers(0, 127), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
    st.lists(st.one_of(st.binary(min_size=160, max_size=160), st.integers(1, 3)), max_size=12),
)  # fmt: skip
def test_audio_bytes_is_audio_then_to_bytes(pt: int, ssrc: int, seq: int, ts: int, steps: list) -> None:
    """The send path's fast packetiser against the packet object's serialiser: same bytes, same state,
    across sequence/timestamp wraps and talkspurts (a pause marks the next packet)."""
    fast = RtpPacketiser(payload_type=pt, ssrc=ssrc, sequence=seq, timestamp=ts)
    slow = RtpPacketiser(payload_type=pt, ssrc=ssrc, sequence=seq, timestamp=ts)
    for step in steps:
        if isinstance(step, int):
            fast.pause(step)
            slow.pause(step)
            continue
        assert fast.audio_bytes(step) == slow.audio(step).to_bytes()
        assert (fast.sequence, fast.timestamp) == (slow.sequence, slow.timestamp)
