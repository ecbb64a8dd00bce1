"""RFC 4733 telephone-events: one digit per key press, through loss, retransmission and wraps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.dtmf import (
    DIGITS,
    DtmfDigit,
    DtmfError,
    DtmfReceiver,
    DtmfRelay,
    TelephoneEvent,
    digit_event,
    event_digit,
    parse_dtmf_relay,
    tone_payloads,
)
from media.rtp import RtpPacket, RtpPacketiser, RtpReceived, RtpStream

SSRC = 0xCAFE


def _digits(rx: DtmfReceiver, packets: list[tuple[int, bytes]], ssrc: int = SSRC) -> list[str]:
    out = [rx.on_payload(ssrc, ts, payload) for ts, payload in packets]
    return [d.digit for d in out if d is not None]


def test_event_payload_fields() -> None:
    e = TelephoneEvent.parse(bytes.fromhex("0b8a0320"))
    assert e == TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert e.to_bytes() == bytes.fromhex("0b8a0320")
    assert TelephoneEvent.parse(bytes.fromhex("05 3f 00a0 ffff")) == TelephoneEvent(
        5, False, 63, 160
    )  # reserved bit 0x40 ignored


def test_short_payload_and_out_of_range() -> None:
    with pytest.raises(DtmfError, match="3 bytes"):
        TelephoneEvent.parse(b"\x01\x02\x03")
    with pytest.raises(DtmfError):
        TelephoneEvent(1, volume=64).to_bytes()
    with pytest.raises(DtmfError):
        TelephoneEvent(1, duration=70000).to_bytes()


def test_digit_mapping() -> None:
    assert [event_digit(i) for i in (0, 9, 10, 11, 12, 15, 16, 200)] == [
        "0",
        "9",
        "*",
        "#",
        "A",
        "D",
        None,
        None,
    ]
    assert digit_event("#") == 11 and digit_event("a") == 12
    with pytest.raises(DtmfError):
        digit_event("E")


def test_one_digit_per_press_despite_three_end_packets_and_retransmitted_start() -> None:
    rx = DtmfReceiver()
    payloads = tone_payloads(digit_event("5"), 800)
    assert len(payloads) == 4 + 3  # updates at 160..640, then three ends at 800
    stream = [(1000, payloads[0]), (1000, payloads[0]), *[(1000, p) for p in payloads[1:]]]
    assert _digits(rx, stream) == ["5"]


def test_second_press_of_the_same_key_is_a_new_digit() -> None:
    rx = DtmfReceiver()
    press = tone_payloads(1, 640)
    got = _digits(rx, [(8000, p) for p in press] + [(12000, p) for p in press])
    assert got == ["1", "1"]


def test_lost_end_packets_still_one_digit_and_next_press_seen() -> None:
    rx = DtmfReceiver()
    first = tone_payloads(2, 640)[:2]  # every end packet lost
    second = tone_payloads(3, 640)
    assert _digits(rx, [(100, p) for p in first] + [(2000, p) for p in second]) == ["2", "3"]


def test_only_end_packets_arrive() -> None:
    rx = DtmfReceiver()
    ends = tone_payloads(11, 800)[-3:]
    assert _digits(rx, [(5, p) for p in ends]) == ["#"]


def test_timestamp_wrap_between_presses() -> None:
    rx = DtmfReceiver()
    a = [(2**32 - 160, p) for p in tone_payloads(7, 480)]
    b = [(800, p) for p in tone_payloads(7, 480)]
    assert _digits(rx, a + b) == ["7", "7"]


def test_late_packet_of_an_earlier_press_is_ignored() -> None:
    rx = DtmfReceiver()
    one = tone_payloads(1, 480)
    two = tone_payloads(2, 480)
    assert _digits(rx, [(100, one[0]), (900, two[0]), (100, one[-1]), (900, two[-1])]) == ["1", "2"]


def test_flash_swallowed_and_new_ssrc_is_new_press() -> None:
    rx = DtmfReceiver()
    assert rx.on_payload(SSRC, 0, TelephoneEvent(16).to_bytes()) is None
    assert rx.on_payload(SSRC, 0, TelephoneEvent(16, end=True).to_bytes()) is None
    assert rx.on_payload(1, 0, TelephoneEvent(4).to_bytes()) == DtmfDigit("4", 4, 0, 10)
    assert rx.on_payload(2, 0, TelephoneEvent(4).to_bytes()) == DtmfDigit("4", 4, 0, 10)


def test_tone_payloads_short_event_and_limits() -> None:
    assert [TelephoneEvent.parse(p) for p in tone_payloads(0, 100)] == [TelephoneEvent(0, True, 10, 100)] * 3
    with pytest.raises(DtmfError):
        tone_payloads(0, 0)
    with pytest.raises(DtmfError):
        tone_payloads(0, 70000)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    keys=st.lists(st.sampled_from(DIGITS), min_size=1, max_size=12),
    durations=st.lists(st.integers(40, 4000), min_size=12, max_size=12),
    start_seq=st.integers(0, 0xFFFF),
    start_ts=st.integers(0, 0xFFFFFFFF),
    drop=st.sets(st.integers(0, 200), max_size=30),
    repeat=st.sets(st.integers(0, 200), max_size=30),
)
def test_round_trip_encode_packetise_receive_decode(
    keys: list[str], durations: list[int], start_seq: int, start_ts: int, drop: set[int], repeat: set[int]
) -> None:
    """Send key presses as RTP (audio between them), lose and duplicate packets at random: every
    press whose packets are not all lost comes out exactly once, in order."""
    tx = RtpPacketiser(payload_type=0, ssrc=SSRC, sequence=start_seq, timestamp=start_ts)
    wire: list[tuple[RtpPacket, int]] = []  # packet, index of the press (-1 for audio)
    for i, key in enumerate(keys):
        wire += [(tx.audio(bytes(160)), -1) for _ in range(3)]
        packets = tx.event(101, tone_payloads(digit_event(key), durations[i]), durations[i])
        wire += [(p, i) for p in packets]
    stream = RtpStream(payload_types={0, 101}, remote=("10.0.0.1", 4000), now=0.0)
    rx = DtmfReceiver()
    got: list[str] = []
    for n, (packet, _press) in enumerate(wire):
        if n in drop:
            continue
        for _ in range(2 if n in repeat else 1):
            result = stream.on_datagram(packet.to_bytes(), ("10.0.0.1", 4000), n * 0.02)
            if isinstance(result, RtpReceived) and result.packet.payload_type == 101:
                p = result.packet
                digit = rx.on_payload(p.ssrc, p.timestamp, p.payload)
                if digit is not None:
                    got.append(digit.digit)
    expected = [
        key
        for i, key in enumerate(keys)
        if any(press == i for n, (_, press) in enumerate(wire) if n not in drop)
    ]
    assert got == expected


# --- SIP INFO --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Signal=5\r\nDuration=160\r\n", DtmfRelay("5", 160)),
        (b"Signal=#\r\nDuration=250\r\n", DtmfRelay("#", 250)),
        ("signal = *\nduration= 100\n", DtmfRelay("*", 100)),
        ("Signal=10\r\nDuration=160\r\n", DtmfRelay("*", 160)),
        ("Signal=11\r\n", DtmfRelay("#", None)),
        ("Signal=b\r\nDuration=abc\r\nX-Extra=1\r\n", DtmfRelay("B", None)),
    ],
)
def test_dtmf_relay_bodies(body: str | bytes, expected: DtmfRelay) -> None:
    assert parse_dtmf_relay(body) == expected


@pytest.mark.parametrize(
    "body", ["", "Duration=160\r\n", "Signal=\r\n", "Signal=E\r\n", "Signal=16\r\n", "garbage line\r\n"]
)
def test_dtmf_relay_errors(body: str) -> None:
    with pytest.raises(DtmfError):
        parse_dtmf_relay(body)
