"""The SIP parser as the server drives it: parse, validate, every accessor the server calls, the
error answer to what fails; serialising what parsed must reparse to the same message (fixed point).
The C header splitter and Via reader (sipcore/_message_c.c) and the owner reader
(sipcore/_ownership_c.c), when built, must read as their references do or pass.
Documented error type: SipParseError (error_response, on the failure path, raises nothing)."""

from __future__ import annotations

from collections.abc import Iterable

from sipcore import headers, message, ownership
from sipcore.errors import SipParseError
from sipcore.flow import response_destination, stamp_via
from sipcore.headers import Via
from sipcore.message import (
    Request,
    Response,
    error_response,
    parse,
    split_list,
    validate_request,
    validate_response,
)
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


def split_agrees(head: bytes) -> bool:
    """The C splitter's contract on one header section: what `split_fields` returns, or None (and
    None where `split_fields` refuses). True when the C code decided it."""
    c_split = message._c_split
    try:
        reference = message.split_fields(head)  # also memoises the names it checks, as parse does
    except SipParseError:
        assert c_split is None or c_split(head, message._NAME_KEYS) is None, ("C split what is refused", head)
        return False
    fast = c_split(head, message._NAME_KEYS) if c_split is not None else None
    if fast is None:
        return False
    assert fast == reference, ("the C splitter disagrees", head, fast, reference)
    assert all(type(x) is str for field in fast[1] for x in field), head
    return True


def via_agrees(text: str) -> bool:
    """The C Via reader's contract on one Via value: what `Via.parse_py` builds, or None (and None
    where `Via.parse_py` refuses). True when the C code decided it."""
    c_via = headers._c_via
    fast = c_via(text) if c_via is not None else None
    try:
        ref = Via.parse_py(text)
    except SipParseError:
        assert fast is None, ("C read a Via that is refused", text)
        return False
    if fast is None:
        return False
    assert fast == (ref.transport, ref.host, ref.port, ref.params), ("the C Via reader disagrees", text, fast)
    return True


def owner_agrees(data: bytes, workers: int) -> bool:
    """The C owner reader's contract on one message: `owner_py`'s index, or -1. True when the C code
    decided it."""
    c_owner = ownership._c_owner
    fast = c_owner(data, workers) if c_owner is not None else -1
    if fast == -1:
        return False
    assert fast == ownership.owner_py(data, workers), ("the C owner reader disagrees", data, workers, fast)
    return True


def check(data: bytes) -> None:
    for workers in (2, 3):
        owner_agrees(data, workers)
    start = 0
    while data[start : start + 2] == b"\r\n":  # as parse skips them (RFC 3261 §7.5)
        start += 2
    try:
        split_agrees(message.split_head(data[start:])[0])
    except SipParseError:
        pass
    try:
        msg = parse(data)
    except SipParseError as exc:
        if exc.status is not None:
            resp = error_response(data, exc.status, exc.reason, "t")
            if resp is not None:
                parse(resp.serialize())  # our own answer parses
        return
    for field in msg.headers.get_fields("via"):  # the texts Via.parse is handed: each field, and
        via_agrees(field)  # each value of a field split as `Message.vias` splits it
        try:
            values = split_list(field)
        except SipParseError:
            continue
        for value in values:
            via_agrees(value)
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
