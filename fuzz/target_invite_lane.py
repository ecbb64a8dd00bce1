"""The INVITE lane (registrar/invite_lane.py): what it takes, the general path must take too, read
the same way (Call-ID, From URI, Request-URI, User-Agent, To tag; no hop limit reached, no Route, no
Proxy-Require), and the lane's answer must be the general path's, byte for byte."""

from __future__ import annotations

import re
from collections.abc import Iterable

from registrar import invite_lane, lane
from sipcore.checks import check_max_forwards, check_proxy_require, check_scheme
from sipcore.errors import SipParseError
from sipcore.flow import stamp_via
from sipcore.message import STATELESS_TAG, Request, parse, stable_tag, validate_request

from .seeds import messages

_CSEQ = re.compile(rb"(?im)^(CSeq[ \t]*:[ \t]*[0-9]+[ \t]+)[A-Za-z]+")
REMOTES = [("127.0.0.1", 5060), ("192.0.2.7", 40312), ("10.1.2.3", 0), ("::1", 5062), ("127.0.0.1", 65535)]


def seeds() -> Iterable[bytes]:
    for msg in messages():
        yield b"\x00" + msg
        head, _, body = msg.partition(b"\r\n\r\n")
        rest = head.partition(b"\r\n")[2]  # the same headers under a lane-shaped request line
        fields = _CSEQ.sub(rb"\1INVITE", rest)
        yield b"\x01INVITE sip:1002@127.0.0.1 SIP/2.0\r\n" + fields + b"\r\n\r\n" + body


def check(data: bytes) -> None:
    if not data:
        return
    remote, data = REMOTES[data[0] % len(REMOTES)], data[1:]
    taken = invite_lane.read(data, remote)
    if taken is None:
        return
    extra = [("Proxy-Authenticate", 'Digest realm="fuzz", nonce="n", algorithm=MD5, qop="auth"')]
    answer = lane.render(taken, 407, None, extra, "fuzz")
    try:
        req = parse(data)
        assert isinstance(req, Request)
        validate_request(req)
        errors = (check_scheme(req), check_max_forwards(req), check_proxy_require(req))
        seen = (
            req.method,
            req.call_id,
            req.from_.sip_uri,
            req.ruri,
            req.headers.get("user-agent"),
            req.to_tag,
        )
    except SipParseError as exc:
        raise AssertionError(("the lane took what the general path refuses", data, exc.reason)) from None
    assert errors == (None, None, None), ("the general path answers it otherwise", data, errors)
    assert "route" not in req.headers and "proxy-authorization" not in req.headers, data
    assert len(req.vias) == 1, data
    read = (taken.method, taken.call_id, taken.from_uri, taken.ruri, taken.user_agent, None)
    assert seen == read, ("the lane reads it otherwise", data, seen, read)
    # the general path's answer, as the server builds it (Via stamped as received), byte for byte
    stamped = stamp_via(req.top_via, remote)
    if stamped is not req.top_via:
        req.headers.remove_first_value("via")
        req.headers.add("via", str(stamped), first=True)
        req.invalidate()
    tag = STATELESS_TAG + stable_tag(f"{req.call_id}|{req.headers.get('from')}|{req.top_via.branch}")
    assert tag == taken.tag, data
    general = req.make_response(407, to_tag=tag, extra=[*extra, ("Server", "fuzz")]).serialize()
    assert answer == general, ("the lane and the general path answer differently", data, answer, general)
