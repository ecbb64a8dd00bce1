"""Stateful-proxy message operations (RFC 3261 §16), as pure functions over messages.

The call controller at the edge decides *where* a request goes; these functions build *what* is sent:
the forwarded copy (Request-URI, Max-Forwards, Record-Route, Via), Route pre-processing (§16.4),
the response relayed upstream (§16.7 step 3), CANCEL (§9.1), best-response choice (§16.7 step 6),
the ACK branch for a 2xx (stateless forwarding keeps retransmissions on one branch), and in-dialog
requests the proxy itself originates (a BYE for a prepaid cut-off).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import SipParseError
from .headers import NameAddr, Via, canonical_name, split_list
from .message import (
    ENCODING,
    ENCODING_ERRORS,
    MAGIC_COOKIE,
    Headers,
    Request,
    Response,
    header_key,
    new_branch,
)
from .uri import SipUri


@dataclass(frozen=True, slots=True)
class Hop:
    """Our own address for one transport: what goes in Via and Record-Route."""

    transport: str  # "UDP" | "TCP" | "TLS" | "WS" | "WSS"
    host: str
    port: int

    @property
    def uri_params(self) -> str:
        """The ``;transport=`` parameter of our URIs for this transport (none for UDP, the default)."""
        return "" if self.transport == "UDP" else f";transport={self.transport.lower()}"

    def via(self, branch: str) -> str:
        return f"SIP/2.0/{self.transport} {self.host}:{self.port};branch={branch};rport"

    def record_route(self) -> str:
        return f"<sip:{self.host}:{self.port}{self.uri_params};lr>"


def forward_request(
    req: Request,
    ruri: str,
    hop: Hop,
    branch: str | None = None,
    record_route: tuple[str, ...] = (),
    extra_headers: tuple[tuple[str, str], ...] = (),
    replace_headers: tuple[tuple[str, str], ...] = (),
    remove: Mapping[str, Callable[[str], bool] | None] | None = None,
) -> Request:
    """§16.6: a copy with the new Request-URI, Max-Forwards decremented (70 when absent), our
    Record-Route values on top of the Record-Route fields, our Via on top of the Vias, the
    ``replace_headers`` set (one field at the first one's place, or appended) and ``extra_headers``
    appended. ``remove`` drops fields by header key: every field of a key mapped to None, or the
    fields whose value the key's predicate accepts (credentials for our own realm, say). The
    received request is left untouched.

    Built in one pass over the received fields (the unchanged ones shared: fields are replaced,
    never changed in place), so the copy costs one list, not a copy and an index rebuild per
    edit; tests/sipcore/test_forward_request.py checks it against the edit-by-edit construction."""
    mf = req.max_forwards
    branch = branch or new_branch()
    via = hop.via(branch)
    replace = {"max-forwards": str(70 if mf is None else mf - 1)}
    for name, value in replace_headers:
        key = header_key(name)
        if key in _NOT_REPLACEABLE:
            raise ValueError(f"forward_request cannot replace {name}")
        replace[key] = value
    src = req.headers.entries
    rr = [["record-route", "Record-Route", v] for v in record_route]
    out: list[list[str]] = []
    if rr and not any(e[0] == "record-route" for e in src):
        out.extend(rr)  # no Record-Route yet: ours go first of all
        rr = []
    via_done = False
    replaced: set[str] = set()
    for entry in src:
        key = entry[0]
        if remove is not None and key in remove:
            rule = remove[key]
            if rule is None or rule(entry[2]):
                continue
        if key == "via" and not via_done:
            out.append(["via", "Via", via])
            via_done = True
        elif key == "record-route" and rr:
            out.extend(rr)
            rr = []
        if key in replace:
            if key not in replaced:  # the first field takes the value, later ones go
                replaced.add(key)
                out.append([key, entry[1], replace[key]])
            continue
        out.append(entry)
    for key, value in replace.items():
        if key not in replaced:
            out.append([key, canonical_name(key), value])
    for name, value in extra_headers:
        key = header_key(name)
        out.append([key, canonical_name(key), value])
    if not via_done:
        out.insert(0, ["via", "Via", via])
    fwd = Request(req.method, ruri, Headers(out), req.body)
    # our own Via, known without parsing it back (the client transaction reads its branch)
    if ":" not in hop.host:  # (an IPv6 reference is left to the parser)
        fwd._cache["top_via"] = Via(
            hop.transport, hop.host, hop.port, [("branch", branch), ("rport", None)], via
        )
    return fwd


_NOT_REPLACEABLE = frozenset({"via", "record-route", "max-forwards"})


def pre_process_route(req: Request, is_me: Callable[[SipUri], bool]) -> None:
    """§16.4: undo a strict router's rewrite (Request-URI is our Record-Route value: the real target is
    the last Route), then drop Route values that name us (one, or two with double Record-Route)."""
    ruri = req.ruri
    if isinstance(ruri, SipUri) and is_me(ruri) and "route" in req.headers:
        routes = req.headers.get_all("route")
        last = NameAddr.parse(routes[-1])
        if ruri.user is None and ruri.has_param("lr") is False:
            req.set_uri(last.uri_text)
            _remove_last_route(req.headers)
    changed = False
    for _ in range(2):
        top = req.headers.get("route")
        if top is None:
            break
        first = split_list(top)[0]
        uri = NameAddr.parse(first).uri
        if isinstance(uri, SipUri) and is_me(uri):
            req.headers.remove_first_value("route")
            changed = True
        else:
            break
    if changed:
        req.raw = None  # only Route values went: every parsed value cached so far still holds


def _remove_last_route(headers: Headers) -> None:
    values = headers.get_all("route")
    headers.remove("route")
    for v in values[:-1]:
        headers.add("route", v)


def next_hop(req: Request) -> SipUri | None:
    """Where a request goes next by the book: the top Route (loose routing), else the Request-URI."""
    top = req.headers.get("route")
    if top is not None:
        uri = NameAddr.parse(split_list(top)[0]).uri
    else:
        uri = req.ruri
    return uri if isinstance(uri, SipUri) else None


_VIA_LINE = re.compile(rb"\r\n(?:via|v)[ \t]*:([^\r\n]*)", re.IGNORECASE).search
_KEPT = ("call_id", "cseq", "from", "to")  # parsed values a relayed response shares with the received one


def relay_response(resp: Response) -> Response:
    """§16.7 step 3: the response to pass upstream, without our (top) Via.

    When our Via is a field of its own (always, for what we sent), the relayed response shares the
    other header fields (they are replaced, never changed in place), keeps the received bytes minus
    that one line (so the peer's spelling passes through untouched and nothing is re-serialised),
    and the values parsed already."""
    h = resp.headers
    positions = (h._index or h._idx()).get("via")
    if not positions or "," in h.entries[positions[0]][2]:
        headers = h.copy()
        headers.remove_first_value("via")
        return Response(resp.status, resp.reason, headers, resp.body)
    i = positions[0]
    entries = h.entries
    out = Response(resp.status, resp.reason, Headers(entries[:i] + entries[i + 1 :]), resp.body)
    raw = resp.raw
    m = _VIA_LINE(raw) if raw is not None else None
    # the line found is our field, whole (the value matches and no continuation line follows)
    if m is not None and m.group(1).strip() == entries[i][2].encode(ENCODING, ENCODING_ERRORS):
        end = m.end()
        if raw[end + 2 : end + 3] not in (b" ", b"\t"):  # type: ignore[index]
            out.raw = raw[: m.start()] + raw[end:]  # type: ignore[index]
    cache, kept = resp._cache, out._cache
    for key in _KEPT:
        value = cache.get(key)
        if value is not None:
            kept[key] = value
    vias = cache.get("vias")
    if vias is not None and len(vias) > 1:  # type: ignore[arg-type]
        kept["top_via"] = vias[1]  # type: ignore[index]
    return out


def make_cancel(invite: Request) -> Request:
    """§9.1: CANCEL of a forwarded INVITE: same Request-URI, top Via (branch), From, To, Call-ID,
    CSeq number and Route set."""
    entries: list[list[str]] = [["via", "Via", invite.headers.get_fields("via")[0].split(",")[0].strip()]]
    for key in ("route", "from", "to", "call-id"):
        for value in invite.headers.get_fields(key):
            entries.append([key, key.title() if key != "call-id" else "Call-ID", value])
    entries.append(["max-forwards", "Max-Forwards", "70"])
    entries.append(["cseq", "CSeq", f"{invite.cseq[0]} CANCEL"])
    return Request("CANCEL", invite.uri, Headers(entries))


def ack_branch(incoming_branch: str | None, salt: str) -> str:
    """Deterministic branch for a statelessly forwarded ACK of a 2xx, so retransmissions agree."""
    digest = hashlib.blake2s(f"{incoming_branch}|{salt}".encode(), digest_size=8).hexdigest()
    return MAGIC_COOKIE + "a" + digest


def best_response(responses: list[Response]) -> Response | None:
    """§16.7 step 6: a 6xx wins; otherwise the lowest class among 3xx–5xx, preferring specific
    4xx over 408/480-like generic ones only through the class order. 503 is sent as 500 (§16.7)."""
    finals = [r for r in responses if r.status >= 300]
    if not finals:
        return None
    six = [r for r in finals if r.status >= 600]
    if six:
        return six[0]
    return min(finals, key=lambda r: (r.status // 100, r.status in (408, 480, 503), r.status))


def in_dialog_request(
    method: str,
    remote_target: str,
    local: str,
    remote: str,
    call_id: str,
    cseq: int,
    hop: Hop,
    route_set: tuple[str, ...] = (),
) -> Request:
    """A request the proxy originates inside a dialog on behalf of one party (e.g. BYE at a prepaid
    cut-off): From = that party's address with its tag, To = the peer's with its tag."""
    headers = Headers(
        [
            ["via", "Via", hop.via(new_branch())],
            ["max-forwards", "Max-Forwards", "70"],
            ["from", "From", local],
            ["to", "To", remote],
            ["call-id", "Call-ID", call_id],
            ["cseq", "CSeq", f"{cseq} {method}"],
        ]
    )
    for value in route_set:
        headers.add("route", value)
    headers.add("Reason", 'SIP;cause=200;text="Call duration limit"')
    return Request(method, remote_target, headers)


def target_uri_of(contact_value: str) -> str:
    """The URI inside a Contact value (``<sip:…>;params`` or a bare URI): the remote target."""
    try:
        return NameAddr.parse(contact_value).uri_text
    except SipParseError:  # a peer's odd Contact: take what lies between <> or before ';'
        value = contact_value.strip()
        if "<" in value and ">" in value:
            return value[value.index("<") + 1 : value.index(">")]
        return value.split(";", 1)[0]
