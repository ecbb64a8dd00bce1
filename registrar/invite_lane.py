"""The INVITE challenge lane: a phone's first INVITE, without credentials, read straight from its bytes
(sans-IO) and answered without a transaction.

Why: every call a phone places starts with an INVITE the proxy challenges (407, RFC 3261 §22.3), and
a flood of INVITEs without credentials is the commonest attack on a public SIP port. On the general
path the 407 costs ~56 µs of CPU in process (~100 within a whole call): a parsed and validated
Request, the dispatch through the SIP server, the proxy service and the call controller, a Response
object. The answer needs a handful of fields. The lane reads them into an
`InviteLaneRequest`, an `invite_auth.InviteView`: the same `authenticate_invite` decides on it as on
a parsed INVITE (one decision procedure), and `registrar.lane.render` writes the answer's bytes.
Its reading is the parser's where it matters: the header fields are split by the parser's own
splitter (`sipcore.message.header_fields`), From and To are read by its memoised `NameAddr.parse`
(so the call's next INVITE, with the same From and To, finds them read), the Via by the REGISTER
lane's `stamped_via`.

What it takes: an INVITE with exactly one Via value (RFC 3261 branch, the plain spelling), From and
To that parse (no To tag), Call-ID, ``CSeq: n INVITE``, Max-Forwards 1-255 if any, a Content-Length
that frames the body exactly, no Route, Proxy-Require,
Proxy-Authorization or Expires, no single-valued header twice, and a ``sip:`` Request-URI without
headers. Whether the proxy answers such an INVITE without a transaction (a phone, not a trunk; no
call with that Call-ID; not draining; one host) is the call controller's word
(`CallController.may_challenge`), asked by the service. Anything else returns None from `read`,
before any side effect, and takes the general path, which stays the reference: for what the lane
takes it answers byte for byte what the general path answers, with the same counters
(tests/registrar/test_invite_lane.py drives both with the same messages and compares; the
``invite_lane`` fuzz target holds the lane's reading to the parser's). The ACK of the 407 takes the
general path (sip_server._absorbs_ack): read here it cost as much, its To being new text.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from registrar.lane import stamped_via
from sipcore.errors import SipParseError
from sipcore.headers import SINGLE_HEADERS, NameAddr
from sipcore.message import STATELESS_TAG, header_fields, stable_tag
from sipcore.uri import SipUri, Uri, parse_uri

_REQUEST_LINE = re.compile(r"INVITE (sip:[^\s?]+) SIP/2\.0\Z").match
_CSEQ = re.compile(r"([0-9]{1,10}) INVITE\Z").match
_MAX_FORWARDS = re.compile(r"[0-9]{1,3}\Z").match

# headers the answer copies, the lane reads, or leaves to the general path
_COPIED = frozenset({"via", "from", "to", "call-id", "cseq"})
_READ = frozenset({"max-forwards", "user-agent", "content-length"})
_ONCE = _COPIED | _READ
_GENERAL_ONLY = frozenset({"route", "proxy-require", "proxy-authorization", "expires"})


class InviteLaneRequest(NamedTuple):
    """What the proxy needs of a credential-less INVITE, as read by `read`: an
    `invite_auth.InviteView` and a `registrar.lane.Answered`."""

    copied: tuple[tuple[str, str], ...]  # (name as sent, value) of Via/From/To/Call-ID/CSeq, answer order
    to_index: int  # position of To in ``copied`` (the answer adds its tag there)
    tag: str  # the To tag of an answer sent without a transaction
    call_id: str
    destination: tuple[str, int]  # where a UDP answer goes (§18.2.2 and RFC 3581)
    from_uri: SipUri | None
    ruri: Uri
    user_agent: str | None

    @property
    def method(self) -> str:
        return "INVITE"

    @property
    def credentials(self) -> None:
        return None  # a request with a Proxy-Authorization takes the general path


def read(data: bytes, remote: tuple[str, int]) -> InviteLaneRequest | None:
    """The INVITE in ``data`` (from ``remote``), or None when it is not one for the lane."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    try:  # the header fields as the general parser reads them (folded lines unfolded alike)
        first, entries, index = header_fields(data[:end])
    except SipParseError:
        return None  # the general path words the 400
    line = _REQUEST_LINE(first)
    if line is None or not _GENERAL_ONLY.isdisjoint(index):
        return None
    if len(index) < len(entries):  # a header repeated: identical or not, the general path decides
        for key, positions in index.items():
            if len(positions) > 1 and (key in _ONCE or key in SINGLE_HEADERS):
                return None
    try:
        via_text, call_id, cseq_text, from_value, to_value, length = (
            entries[index[key][0]][2] for key in ("via", "call-id", "cseq", "from", "to", "content-length")
        )
    except KeyError:
        return None  # a mandatory header (or Content-Length) missing
    if not call_id:
        return None
    if not (length.isdigit() and length.isascii()) or int(length) != len(data) - end - 4:
        return None  # a body shorter or longer than it says: the general path frames it
    cseq = _CSEQ(cseq_text)
    if cseq is None or int(cseq.group(1)) >= 2**31:
        return None
    if "max-forwards" in index:
        hops = entries[index["max-forwards"][0]][2]
        if _MAX_FORWARDS(hops) is None or not 0 < int(hops) <= 255:
            return None  # 0 is answered 483, beyond 255 reads as absent: the general path's
    via = stamped_via(via_text, remote)
    if via is None:
        return None
    via_value, branch, _, destination = via
    try:  # From and To as the general path reads them (memoised by text: the call's next INVITE has them)
        to_tag = NameAddr.parse(to_value).tag
        from_uri = NameAddr.parse(from_value).sip_uri
        ruri = parse_uri(line.group(1))
    except SipParseError:
        return None
    if to_tag is not None or not isinstance(ruri, SipUri) or ruri.headers is not None:
        return None
    # the answer's copied headers, in the request's order: a Via the server stamped moves to the top
    # under its full name, as the general path's headers.add(first=True) puts it
    copied = [e for e in entries if e[0] in _COPIED]  # [key, name as sent, value]
    if via_value is not via_text:
        copied = [["via", "Via", via_value], *(e for e in copied if e[0] != "via")]
    to_index = next(i for i, e in enumerate(copied) if e[0] == "to")
    agent = index.get("user-agent")
    return InviteLaneRequest(
        tuple((e[1], e[2]) for e in copied), to_index,
        STATELESS_TAG + stable_tag(f"{call_id}|{from_value}|{branch}"), call_id, destination,
        from_uri, ruri, entries[agent[0]][2] if agent is not None else None,
    )  # fmt: skip
