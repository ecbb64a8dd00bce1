"""What the message model makes of some bytes, as plain data: the differential test of its mypyc
build (tests/sipcore/test_message_compiled.py) compares this, computed by the compiled modules, with
the same computed by the Python sources in a process started with SIPCORE_PURE_PYTHON=1.

Run as a module it reads a JSON list of base64 messages on stdin and writes their descriptions."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from typing import Any

from sipcore.errors import SipParseError
from sipcore.flow import response_destination, stamp_via
from sipcore.headers import NameAddr, Via
from sipcore.message import Request, Response, error_response, parse, validate_request, validate_response
from sipcore.uri import SipUri


def _failure(exc: BaseException) -> list[Any]:
    if isinstance(exc, SipParseError):
        return ["SipParseError", exc.reason, exc.status]
    return [type(exc).__name__, str(exc)]  # anything else: the same type and text, or a difference


def _try(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception as exc:  # every failure is part of the description
        return ["raised", *_failure(exc)]


def _uri(uri: object) -> Any:
    if isinstance(uri, SipUri):
        return [str(uri), uri.scheme, uri.user, uri.host, uri.port, uri.params, uri.headers, uri.aor(),
                uri.transport, uri.lr, uri.effective_port()]  # fmt: skip
    return [type(uri).__name__, str(uri)]


def _via(via: Via) -> Any:
    return [via.transport, via.host, via.port, via.params, via.branch, str(via)]


def _name_addr(na: NameAddr) -> Any:
    return [na.display, na.uri_text, na.params, na.tag, str(na), _try(lambda: _uri(na.uri))]


def _request(msg: Request) -> list[Any]:
    return [
        _try(lambda: validate_request(msg)),
        _try(lambda: _uri(msg.ruri)),
        _try(lambda: [msg.max_forwards, msg.expires, msg.content_type, msg.option_tags("require")]),
        _try(lambda: [[c.star, str(c)] if c.star else [_name_addr(c), c.expires, c.q] for c in msg.contacts]),
        _try(lambda: [msg.headers.get_all("route"), msg.headers.get_all("record-route")]),
        _try(lambda: response_destination(stamp_via(msg.top_via, ("192.0.2.1", 5060)))),
        _try(lambda: msg.make_response(401, to_tag="t", extra=(("WWW-Authenticate", 'Digest realm="x"'),)).serialize()),
    ]  # fmt: skip


def describe(data: bytes) -> list[Any]:
    """Everything the server reads of ``data``, each failure with its type and text."""
    try:
        msg = parse(data)
    except SipParseError as exc:
        status, reason = exc.status or 400, exc.reason
        answer = _try(lambda: error_response(data, status, reason, "t"))
        return ["refused", *_failure(exc), answer.serialize() if isinstance(answer, Response) else answer]
    except Exception as exc:
        return ["crashed", *_failure(exc)]
    common = [
        type(msg).__name__, msg.start_line(), msg.headers.entries, msg.body, msg.raw is not None,
        _try(lambda: [_via(v) for v in msg.vias]), _try(lambda: _via(msg.top_via)), _try(lambda: msg.call_id),
        _try(lambda: msg.cseq), _try(lambda: _name_addr(msg.from_)), _try(lambda: _name_addr(msg.to)),
        _try(lambda: [msg.from_tag, msg.to_tag]), _try(msg.serialize),
    ]  # fmt: skip
    kept = _try(lambda: [(k := msg.kept_copy()).serialize(), k.headers.get("call-id"), k.headers.entries])
    if isinstance(msg, Response):
        rest = [_try(lambda: validate_response(msg)), msg.status, msg.reason]
    else:
        rest = _request(msg)
    msg.invalidate()
    again = _try(lambda: describe_again(msg.serialize()))
    return ["parsed", *common, kept, *rest, again]


def describe_again(data: bytes) -> list[Any]:
    """The reparse of our own serialisation: its type, start line and fields."""
    msg = parse(data)
    return [type(msg).__name__, msg.start_line(), msg.headers.entries, msg.body]


def _plain(value: Any) -> Any:
    """JSON-ready: bytes as latin-1 text, tuples as lists."""
    if isinstance(value, bytes):
        return ["bytes", value.decode("latin-1")]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | str):
        return value
    return [type(value).__name__, repr(value)]


def describe_all(inputs: list[bytes]) -> list[Any]:
    return [_plain(describe(data)) for data in inputs]


def main() -> None:
    """stdin: a JSON list of base64 messages; stdout: their descriptions, as JSON."""
    given = [base64.b64decode(x) for x in json.load(sys.stdin)]
    json.dump(describe_all(given), sys.stdout)


if __name__ == "__main__":
    main()
