"""forward_request builds the forwarded copy in one pass: checked against the edit-by-edit
construction of §16.6 (copy every field, set Max-Forwards, Record-Route values on top, replaced
fields, extra fields, our Via on top) over generated header lists."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.message import Headers, Request
from sipcore.proxy import Hop, forward_request

HOP = Hop("UDP", "192.0.2.10", 5060)


def _ours(value: str) -> bool:
    return 'realm="ours"' in value


def _edit_by_edit(req: Request, ruri: str, branch: str, record_route: tuple[str, ...],
                  extra: tuple[tuple[str, str], ...], replace: tuple[tuple[str, str], ...],
                  remove: dict | None = None) -> Request:  # fmt: skip
    rules = remove or {}
    headers = Headers(
        [list(e) for e in req.headers.entries if e[0] not in rules or (rules[e[0]] and not rules[e[0]](e[2]))]
    )
    mf = req.max_forwards
    headers.set("max-forwards", str(70 if mf is None else mf - 1))
    for value in reversed(record_route):
        headers.add("record-route", value, first=True)
    for name, value in replace:
        headers.set(name, value)
    for name, value in extra:
        headers.add(name, value)
    headers.add("via", HOP.via(branch), first=True)
    return Request(req.method, ruri, headers, req.body)


_FIELD = st.sampled_from(
    [
        ("via", "Via", "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa"),
        ("via", "v", "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKc"),
        ("from", "From", "<sip:a@example.com>;tag=1"),
        ("from", "f", "<sip:other@example.com>;tag=2"),
        ("to", "To", "<sip:b@example.com>"),
        ("max-forwards", "Max-Forwards", "7"),
        ("max-forwards", "max-forwards", "70"),
        ("record-route", "Record-Route", "<sip:p1.example.com;lr>"),
        ("route", "Route", "<sip:p2.example.com;lr>"),
        ("contact", "m", "<sip:a@10.0.0.1:5070>"),
        ("p-asserted-identity", "P-Asserted-Identity", "<sip:+33100000000@example.com>"),
        ("x-custom", "X-Custom", "1"),
        ("proxy-authorization", "Proxy-Authorization", 'Digest username="1001", realm="ours", response="1"'),
        ("proxy-authorization", "Proxy-Authorization", 'Digest username="x", realm="theirs", response="2"'),
        ("remote-party-id", "Remote-Party-ID", "<sip:+33140000000@example.com>;party=calling"),
    ]
)
_REMOVE = st.sampled_from(
    [
        None,
        {"p-asserted-identity": None},
        {"proxy-authorization": _ours, "remote-party-id": None, "p-asserted-identity": None},
    ]
)


_REPLACE = st.sampled_from(
    [("from", "<sip:+331@x>;tag=1"), ("From", "<sip:+332@x>;tag=1"), ("to", "<sip:c@x>"), ("X-Custom", "2")]
)
_EXTRA = st.sampled_from(
    [("P-Asserted-Identity", "<sip:+331@x>"), ("Diversion", "<sip:1@x>;reason=busy"), ("x-custom", "3")]
)


@settings(max_examples=2000, deadline=None)
@given(
    fields=st.lists(_FIELD, max_size=10),
    record_route=st.sampled_from([(), ("<sip:192.0.2.10:5060;lr>",), ("<sip:a;lr>", "<sip:b;lr>")]),
    replace=st.lists(_REPLACE, max_size=3),
    extra=st.lists(_EXTRA, max_size=3),
    remove=_REMOVE,
)
def test_one_pass_equals_edit_by_edit(
    fields: list[tuple[str, str, str]],
    record_route: tuple[str, ...],
    replace: list[tuple[str, str]],
    extra: list[tuple[str, str]],
    remove: dict | None,
) -> None:
    def request() -> Request:
        entries = [list(f) for f in fields]
        return Request("INVITE", "sip:b@example.com", Headers(entries), b"v=0\r\n")

    req = request()
    fwd = forward_request(
        req, "sip:b@10.0.0.9:5060", HOP, "z9hG4bKours", record_route, tuple(extra), tuple(replace), remove
    )
    ref = _edit_by_edit(
        request(), "sip:b@10.0.0.9:5060", "z9hG4bKours", record_route, tuple(extra), tuple(replace), remove
    )
    assert fwd.headers.entries == ref.headers.entries
    assert fwd.serialize() == ref.serialize()
    assert fwd.top_via.branch == "z9hG4bKours" and str(fwd.top_via) == HOP.via("z9hG4bKours")
    assert req.headers.entries == request().headers.entries  # the received request is untouched
