"""TCP stream reassembly (sipcore/framing.py): the first bytes choose how the stream is cut into
reads; cut anyhow, it must give the same messages and pings as in one read, fail at the same point,
never yield a message over the limit, and each message goes on to the parser (SipParseError only)."""

from __future__ import annotations

from collections.abc import Iterable

from sipcore.errors import SipParseError
from sipcore.framing import FramingFailed, PingReceived, StreamFramer
from sipcore.message import error_response, parse

from .seeds import messages

MAX_SIZE = 4096


def seeds() -> Iterable[bytes]:
    msgs = [m for m in messages() if len(m) < MAX_SIZE]
    for i, msg in enumerate(msgs):
        # a cut pattern, then a pipelined pair with keep-alives around them
        yield bytes([7, 1, 13, 64]) + b"\r\n\r\n" + msg + b"\r\n" + msgs[(i + 1) % len(msgs)]


def _run(chunks: list[bytes]) -> tuple[list[bytes], int, bool]:
    framer = StreamFramer(MAX_SIZE)
    out = [item for chunk in chunks for item in framer.feed(chunk)]
    msgs = [m for m in out if isinstance(m, bytes)]
    failures = [m for m in out if isinstance(m, FramingFailed)]
    assert len(failures) <= 1 and all(len(m) <= MAX_SIZE for m in msgs), out
    for failure in failures:
        if failure.head:
            error_response(failure.head, failure.status, failure.reason, "t")
    return msgs, sum(isinstance(m, PingReceived) for m in out), bool(failures)


def check(data: bytes) -> None:
    cuts, stream = data[:4], data[4:]
    chunks, pos, i = [], 0, 0
    while pos < len(stream):
        size = 1 + (cuts[i % len(cuts)] if cuts else 0)
        chunks.append(stream[pos : pos + size])
        pos, i = pos + size, i + 1
    whole, split = _run([stream]), _run(chunks)
    assert split[2] == whole[2], (data, whole, split)
    if whole[2]:  # what came before the failure agrees
        n = min(len(whole[0]), len(split[0]))
        assert whole[0][:n] == split[0][:n], (data, whole, split)
    else:
        assert split == whole, (data, whole, split)
    for msg in whole[0]:
        try:
            parse(msg, stream=True)
        except SipParseError:
            pass
