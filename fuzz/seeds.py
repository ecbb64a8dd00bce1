"""The starting corpus: the RFC 4475 / RFC 5118 torture messages of ../shared/conformance and the
messages the tests and benchmarks send, and what each target extracts from them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = ROOT.parent / "shared" / "conformance"

_EXTRA = [  # shapes the torture messages lack: what SIPp and desk phones send every minute
    b"REGISTER sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:45061;branch=z9hG4bK-7-1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:u10007@127.0.0.1:5060>;tag=7SIPpTag07\r\n"
    b"To: <sip:u10007@127.0.0.1:5060>\r\nCall-ID: 7-4711@127.0.0.1\r\nCSeq: 1 REGISTER\r\n"
    b"Contact: <sip:u10007@127.0.0.1:45061;transport=UDP>\r\nExpires: 3600\r\n"
    b"User-Agent: sipp-bench\r\nContent-Length: 0\r\n\r\n",
    b"REGISTER sip:demo.sipcore.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK8e3a2c;rport\r\n"
    b"Contact: <sip:1001-0x5581@192.168.1.20:5060;transport=udp>;expires=3600;reg-id=1;q=0.9\r\n"
    b"Max-Forwards: 70\r\nTo: <sip:1001@demo.sipcore.test>\r\nFrom: <sip:1001@demo.sipcore.test>;tag=c1d2e3\r\n"
    b"Call-ID: 5d1f0a8e7c6b\r\nCSeq: 14285 REGISTER\r\n"
    b'Authorization: Digest username="1001", realm="demo.sipcore.test", nonce="AAAA-abc_def", '
    b'uri="sip:demo.sipcore.test", response="0123456789abcdef0123456789abcdef", algorithm=MD5, '
    b'cnonce="0a4f113b", qop=auth, nc=00000001\r\n'
    b"User-Agent: Yealink SIP-T46U 66.86.0.15\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:1001@pbx.example.com>;tag=a\r\nTo: <sip:pbx.example.com>\r\n"
    b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;received=127.0.0.1;rport=5060\r\n"
    b"From: <sip:1001@pbx.example.com>;tag=a\r\nTo: <sip:pbx.example.com>;tag=b\r\nCall-ID: c1\r\n"
    b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
]


def messages() -> list[bytes]:
    """Every seed SIP message, in a stable order."""
    from benchmarks.samples import INVITE, REGISTER

    found = [p.read_bytes() for p in sorted(CONFORMANCE.glob("rfc*/**/*.sip"))]
    return [*found, INVITE, REGISTER, *_EXTRA]


def header_values(names: tuple[bytes, ...]) -> Iterator[bytes]:
    """The values of the headers ``names`` (lower case) in the seed messages."""
    for msg in messages():
        head = msg.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() in names:
                yield value.strip()


def sdp_bodies() -> Iterator[bytes]:
    """The SDP bodies of the seed messages, the tests' phone offers and our own offer."""
    from media import sdp

    for msg in messages():
        head, _, body = msg.partition(b"\r\n\r\n")
        if re.search(rb"(?im)^(content-type|c)[ \t]*:[ \t]*application/sdp", head) and body.startswith(b"v="):
            yield body
    yield sdp.build_offer(address="192.0.2.1", port=40000, session_id=7).to_bytes()
    try:
        from tests.media.test_sdp import ALL
    except ImportError:  # installed without the tests
        return
    for text in ALL.values():
        yield text if isinstance(text, bytes) else text.encode()
