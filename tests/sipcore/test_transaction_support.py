"""Builders shared by the transaction tests (real ``sipcore.message`` objects, no sockets, no clock)."""

from __future__ import annotations

from collections.abc import Iterable

from sipcore.message import Request, Response, parse

SOURCE = ("UDP", "192.0.2.10", 5060)  # where a server transaction's request came from (opaque to us)
DEST = ("UDP", "198.51.100.7", 5060)  # where a client transaction sends (opaque to us)


def make_request(
    method: str = "INVITE",
    *,
    transport: str = "UDP",
    branch: str | None = "z9hG4bKtest1",
    cseq: int = 1,
    cseq_method: str | None = None,
    uri: str = "sip:2001@pbx.example.com",
    call_id: str = "call-1@192.0.2.10",
    from_tag: str = "caller1",
    to_tag: str | None = None,
    host: str = "192.0.2.10",
    port: int | None = 5060,
    routes: Iterable[str] = (),
) -> Request:
    sent_by = host if port is None else f"{host}:{port}"
    via = f"SIP/2.0/{transport} {sent_by}" + (f";branch={branch}" if branch is not None else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKupstream",
        *[f"Route: {r}" for r in routes],
        "Max-Forwards: 69",
        f'From: "Alice" <sip:1001@pbx.example.com>;tag={from_tag}',
        f"To: <{uri}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:1001@192.0.2.10:5060>",
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def make_ack(invite: Request, response: Response) -> Request:
    """The ACK a UAC sends for a non-2xx: same branch as the INVITE, To tag of the response."""
    return make_request(
        "ACK",
        transport=invite.top_via.transport,
        branch=invite.top_via.branch,
        cseq=invite.cseq[0],
        uri=invite.uri,
        call_id=invite.call_id,
        from_tag=invite.from_tag or "",
        to_tag=response.to_tag,
        host=invite.top_via.host,
        port=invite.top_via.port,
    )


def reply(request: Request, status: int, to_tag: str | None = "callee9") -> Response:
    """A response as it would come back over the wire (re-parsed, so nothing is shared)."""
    msg = parse(bytes(request.make_response(status, to_tag=to_tag)))
    assert isinstance(msg, Response)
    return msg


def names(outputs: Iterable[object]) -> list[str]:
    """Output types in order, for compact assertions."""
    return [type(o).__name__ for o in outputs]


def sent(outputs: Iterable[object]) -> list[object]:
    """The messages of the SendMessage outputs."""
    return [o.message for o in outputs if type(o).__name__ == "SendMessage"]  # type: ignore[attr-defined]
