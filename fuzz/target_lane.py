"""The REGISTER lane: the C reader (registrar/_lane_c.c) against lane.read_py, its reference, on
every input and source address; what the lane takes, the general path must take with the same
values (else the two paths would answer differently), and its answer renders."""

from __future__ import annotations

from collections.abc import Iterable

from registrar import lane
from sipcore.errors import SipParseError
from sipcore.flow import stamp_via
from sipcore.message import Request, parse, validate_request

from .seeds import messages

REMOTES = [("127.0.0.1", 5060), ("192.0.2.7", 40312), ("10.1.2.3", 0), ("::1", 5062), ("127.0.0.1", 65535)]


def seeds() -> Iterable[bytes]:
    for msg in messages():
        head = msg.split(b"\r\n\r\n", 1)[0]
        yield b"\x00" + head + b"\r\n\r\n"
        rest = head.partition(b"\r\n")[2]  # the same headers under a lane-shaped request line
        yield b"\x01REGISTER sip:127.0.0.1 SIP/2.0\r\n" + rest + b"\r\n\r\n"


def check(data: bytes) -> None:
    if not data:
        return
    remote, data = REMOTES[data[0] % len(REMOTES)], data[1:]
    slow = lane.read_py(data, remote)
    if lane._c_read is not None:
        fast = lane._c_read(data, remote)
        assert fast is None or fast == slow, ("C reader disagrees", data, remote, fast, slow)
    if slow is None:
        return
    extra = [("Contact", f"<{slow.uri_text}>;expires=60")]
    answer = lane.render(slow, 200, None, extra, "fuzz")
    try:
        req = parse(data)
        assert isinstance(req, Request)
        validate_request(req)
    except SipParseError as exc:
        raise AssertionError(("the lane took what the general path refuses", data, exc.reason)) from None
    assert (req.method, req.call_id, req.cseq[0]) == ("REGISTER", slow.call_id, slow.cseq), data
    assert req.expires == slow.header_expires, data
    (contact,) = req.contacts
    assert (contact.uri_text, contact.expires, contact.q) == (slow.uri_text, slow.expires, slow.q), data
    # the general path's answer, as the server builds it (Via stamped as received), byte for byte
    stamped = stamp_via(req.top_via, remote)
    if stamped is not req.top_via:
        req.headers.remove_first_value("via")
        req.headers.add("via", str(stamped), first=True)
        req.invalidate()
    general = req.make_response(200, to_tag=slow.tag, extra=[*extra, ("Server", "fuzz")]).serialize()
    assert answer == general, ("the lane and the general path answer differently", data, answer, general)
