"""The SIP parser as the server drives it: parse, validate, every accessor the server calls, the
error answer to what fails; serialising what parsed must reparse to the same message (fixed point).
Documented error type: SipParseError (error_response, on the failure path, raises nothing)."""

from __future__ import annotations

from collections.abc import Iterable

from sipcore.errors import SipParseError
from sipcore.flow import response_destination, stamp_via
from sipcore.message import Request, Response, error_response, parse, validate_request, validate_response
from sipcore.uri import SipUri

from .seeds import messages


def seeds() -> Iterable[bytes]:
    return messages()


def _use(msg: Request | Response) -> None:
    """Every structured value the server reads of a message it accepted."""
    if isinstance(msg, Response):
        validate_response(msg)
        for via in msg.vias:
            response_destination(via)
        return
    validate_request(msg)
    msg.vias, msg.max_forwards, msg.expires, msg.content_type, msg.from_tag, msg.to_tag  # noqa: B018
    msg.option_tags("require"), msg.headers.get_all("route"), msg.headers.get_all("record-route")
    for contact in msg.contacts:
        if not contact.star:
            contact.expires, contact.q, contact.uri  # noqa: B018
    for uri in (msg.ruri, msg.to.uri, msg.from_.uri):
        if isinstance(uri, SipUri):
            uri.aor(), uri.transport, uri.lr, uri.effective_port(), str(uri)
    response_destination(stamp_via(msg.top_via, ("192.0.2.1", 5060)))
    msg.make_response(401, to_tag="t", extra=(("WWW-Authenticate", 'Digest realm="x"'),)).serialize()


def check(data: bytes) -> None:
    try:
        msg = parse(data)
    except SipParseError as exc:
        if exc.status is not None:
            resp = error_response(data, exc.status, exc.reason, "t")
            if resp is not None:
                parse(resp.serialize())  # our own answer parses
        return
    msg.serialize()
    msg.invalidate()
    once = msg.serialize()
    again = parse(once)
    assert type(again) is type(msg) and again.start_line() == msg.start_line(), (data, once)
    assert again.body == msg.body, (data, once)
    again.invalidate()
    assert again.serialize() == once, (data, once)
    try:
        _use(msg)
        first = True
    except SipParseError:
        first = False
    try:
        _use(again)
        second = True
    except SipParseError:
        second = False
    assert first == second, ("accept/reject changed by serialising", data, once)
