"""relay_response (§16.7 step 3) shares the received fields and keeps the received bytes minus our
Via line: checked against the plain way (copy every field, drop the first Via value, serialise)
for the spellings peers use — compact names, odd case and blanks, folded lines, combined values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.message import Headers, Response, parse
from sipcore.proxy import relay_response

OURS = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours;rport"
THEIRS = "SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bKtheirs;received=192.0.2.1;rport=5071"


def _plain(resp: Response) -> Response:
    headers = resp.headers.copy()
    headers.remove_first_value("via")
    return Response(resp.status, resp.reason, headers, resp.body)


def _fields(resp: Response) -> list[tuple[str, str]]:
    """What a receiver reads: every field after parsing, by key and value."""
    return [(k, v) for k, _, v in parse(resp.serialize()).headers.entries]


_NAME = st.sampled_from(["Via", "v", "VIA", "via ", "V"])
_LAYOUT = st.sampled_from(["two fields", "combined", "folded ours", "folded theirs"])


@settings(max_examples=300, deadline=None)
@given(name=_NAME, layout=_LAYOUT, body=st.sampled_from(["", "v=0\r\n"]), parsed=st.booleans())
def test_relayed_response_matches_the_plain_copy(name: str, layout: str, body: str, parsed: bool) -> None:
    if layout == "two fields":
        vias = f"{name}: {OURS}\r\n{name}: {THEIRS}\r\n"
    elif layout == "combined":
        vias = f"{name}: {OURS}, {THEIRS}\r\n"
    elif layout == "folded ours":
        vias = f"{name}: {OURS.removesuffix(';rport')}\r\n ;rport\r\n{name}: {THEIRS}\r\n"
    else:
        vias = f"{name}: {OURS}\r\n{name}: {THEIRS.removesuffix(';rport=5071')}\r\n\t;rport=5071\r\n"
    data = (
        f"SIP/2.0 180 Ringing\r\n{vias}From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
        f"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    resp = parse(data)
    if parsed:
        resp.vias  # noqa: B018 - as when the proxy read them before relaying
    up, plain = relay_response(resp), _plain(parse(data))
    assert _fields(up) == _fields(plain)
    assert up.body == plain.body == body.encode()
    assert up.top_via.host == "10.0.0.7" and up.top_via.branch == "z9hG4bKtheirs"
    assert (up.call_id, up.cseq, up.from_tag, up.to_tag) == ("c1", (1, "INVITE"), "1", "2")
    if layout == "two fields":
        assert up.raw is not None and up.raw == data.replace(f"{name}: {OURS}\r\n".encode(), b"", 1)
    assert resp.serialize() == data  # the received response is left as it was


def test_relayed_fields_are_not_shared_for_writing() -> None:
    """Changing the relayed response replaces fields; the received one keeps its own."""
    data = (
        f"SIP/2.0 200 OK\r\nVia: {OURS}\r\nVia: {THEIRS}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\n"
        "Call-ID: c2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    resp = parse(data)
    up = relay_response(resp)
    up.headers.set("to", "<sip:b@x>;tag=3")
    up.headers.add("Warning", '399 x "y"')
    assert resp.headers.get("to") == "<sip:b@x>;tag=2" and "warning" not in resp.headers
    assert isinstance(up.headers, Headers) and up.headers.get("to") == "<sip:b@x>;tag=3"


def test_a_relayed_response_changed_after_relaying_is_serialised_anew() -> None:
    """§16.7 step 6 sends a 503 upstream as 500: once the status changes (and raw is dropped, as
    the proxy does), the bytes say 500, not the received 503."""
    data = (
        f"SIP/2.0 503 Service Unavailable\r\nVia: {OURS}\r\nVia: {THEIRS}\r\nFrom: <sip:a@x>;tag=1\r\n"
        "To: <sip:b@x>;tag=2\r\nCall-ID: c3\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    up = relay_response(parse(data))
    assert up.serialize().startswith(b"SIP/2.0 503 ")  # passed through as received
    up.status, up.reason = 500, "Server Internal Error"
    up.raw = None
    assert up.serialize().startswith(b"SIP/2.0 500 Server Internal Error\r\n")
