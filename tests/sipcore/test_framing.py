"""TCP stream framing: partial reads, pipelining, keep-alives, framing errors."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.samples import INVITE, REGISTER
from sipcore.framing import FramingFailed, PingReceived, StreamFramer


def test_pipelined_messages_in_one_read() -> None:
    out = StreamFramer().feed(REGISTER + INVITE + REGISTER)
    assert out == [REGISTER, INVITE, REGISTER]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=40))
def test_any_split_of_the_stream_yields_the_same_messages(sizes: list[int]) -> None:
    stream = REGISTER + b"\r\n\r\n" + INVITE + REGISTER
    framer = StreamFramer()
    got = []
    pos = 0
    i = 0
    while pos < len(stream):
        n = sizes[i % len(sizes)]
        got.extend(framer.feed(stream[pos : pos + n]))
        pos += n
        i += 1
    assert [m for m in got if isinstance(m, bytes)] == [REGISTER, INVITE, REGISTER]
    assert sum(isinstance(m, PingReceived) for m in got) == 1


def test_keepalive_ping() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [PingReceived()]


def test_negative_content_length_fails_the_stream() -> None:
    bad = INVITE.replace(b"Content-Length: 141", b"Content-Length: -5")
    out = StreamFramer().feed(bad)
    assert len(out) == 1 and isinstance(out[0], FramingFailed) and out[0].status == 400


def test_conflicting_content_length_fails_the_stream() -> None:
    bad = REGISTER.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 4\r\n")
    (fail,) = StreamFramer().feed(bad)
    assert isinstance(fail, FramingFailed)


def test_oversized_head_and_body_are_refused() -> None:
    framer = StreamFramer(max_size=2000)
    (fail,) = framer.feed(b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * 3000)
    assert isinstance(fail, FramingFailed) and fail.status == 513
    framer = StreamFramer(max_size=2000)
    big = INVITE.replace(b"Content-Length: 141", b"Content-Length: 99999")
    (fail,) = framer.feed(big)
    assert isinstance(fail, FramingFailed) and fail.status == 513
    assert framer.feed(REGISTER) == []  # a failed stream yields nothing more


def test_waits_for_the_body() -> None:
    framer = StreamFramer()
    assert framer.feed(INVITE[:-10]) == []
    assert framer.feed(INVITE[-10:]) == [INVITE]
