"""RFC 6455 codec for SIP over WebSocket: the upgrade answer (sip subprotocol required), frames in
pieces, fragmentation, masking required, 1009 before an oversized payload, control frames."""

from __future__ import annotations

import base64
import os
import struct

from sipcore import websocket as ws

KEY = base64.b64encode(b"0123456789abcdef").decode()


def _upgrade(protocol: str | None = "sip", version: str = "13", key: str = KEY) -> bytes:
    lines = ["GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: keep-alive, Upgrade",
             f"Sec-WebSocket-Key: {key}", f"Sec-WebSocket-Version: {version}"]  # fmt: skip
    if protocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_rfc6455_accept_key_example() -> None:
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_upgrade_accepted_with_sip_subprotocol() -> None:
    answer = ws.answer_upgrade(_upgrade("chat, sip"))
    assert answer.accepted
    assert answer.response.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Protocol: sip\r\n" in answer.response
    assert f"Sec-WebSocket-Accept: {ws.accept_key(KEY)}".encode() in answer.response


def test_upgrade_refused_without_sip_bad_version_or_key() -> None:
    for head, status in ((_upgrade(None), b"400"), (_upgrade("chat"), b"400"), (_upgrade(version="8"), b"426"),
                         (_upgrade(key="short"), b"400"), (b"POST / HTTP/1.1\r\n\r\n", b"400")):  # fmt: skip
        answer = ws.answer_upgrade(head)
        assert not answer.accepted
        assert answer.response.split(b" ")[1] == status


def _client(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    frame = ws.encode_frame(opcode, payload, mask=os.urandom(4))
    return frame if fin else bytes([frame[0] & 0x7F]) + frame[1:]


def test_masked_messages_in_any_split_and_fragments() -> None:
    sip = b"OPTIONS sip:a SIP/2.0\r\n\r\n" * 20  # > 125 bytes: 16-bit length
    stream = _client(ws.TEXT, sip) + _client(ws.PING, b"hi") + _client(ws.BINARY, b"ab", fin=False)
    stream += _client(ws.CONTINUATION, b"cd")
    for cut in range(1, len(stream)):
        dec = ws.FrameDecoder()
        events = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert events == [ws.Message(sip), ws.Ping(b"hi"), ws.Message(b"abcd")]


def test_unmasked_client_frame_is_a_protocol_error() -> None:
    events = ws.FrameDecoder().feed(ws.encode_frame(ws.TEXT, b"x"))
    assert events == [ws.Failed(ws.PROTOCOL_ERROR, "client frame not masked")]


def test_oversized_message_refused_1009_before_its_payload() -> None:
    dec = ws.FrameDecoder(max_message=1000)
    head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 10_000_000) + os.urandom(4)
    assert dec.feed(head) == [ws.Failed(ws.TOO_BIG, "message too large")]
    assert dec.feed(b"more") == []  # nothing read after a failure
    frag = ws.FrameDecoder(max_message=1000)
    events = frag.feed(_client(ws.TEXT, b"a" * 600, fin=False) + _client(ws.CONTINUATION, b"b" * 600))
    assert events == [ws.Failed(ws.TOO_BIG, "message too large")]


def test_close_and_bad_control_frames() -> None:
    assert ws.FrameDecoder().feed(_client(ws.CLOSE, struct.pack("!H", 1001) + b"bye")) == [
        ws.Closed(1001, "bye")
    ]
    assert ws.FrameDecoder().feed(_client(ws.PING, b"x" * 126))[0].code == ws.PROTOCOL_ERROR
    assert ws.FrameDecoder().feed(_client(ws.CONTINUATION, b"x"))[0].code == ws.PROTOCOL_ERROR
    assert ws.FrameDecoder().feed(bytes([0xC1, 0x80]) + os.urandom(4))[0].code == ws.PROTOCOL_ERROR  # RSV1


def test_server_frames_decode_back() -> None:
    for n in (0, 5, 125, 126, 65535, 65536):
        frame = ws.encode_frame(ws.TEXT, b"z" * n)
        masked = bytes([frame[0], frame[1] | 0x80]) + frame[2:]
        # re-mask with a zero key: the payload is unchanged by XOR 0
        cut = 2 + (0 if n < 126 else 2 if n < 65536 else 8)
        events = ws.FrameDecoder(max_message=1 << 20).feed(masked[:cut] + b"\0\0\0\0" + masked[cut:])
        assert events == [ws.Message(b"z" * n)]
