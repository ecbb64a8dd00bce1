"""The REGISTER lane: the everyday REGISTER read straight from its bytes (sans-IO).

Why: a phone's REGISTER is the most frequent request a hosted-PBX registrar sees, and on the general
path it costs ~1.1 M instructions per registration (two requests): a parsed Request with structured
headers, validation, a server transaction, a Response object, outputs between layers. Most of that
builds objects the registrar never reads. The lane reads what the registrar needs with a handful of
regular expressions and string splits into a `LaneRequest`, which is a `registrar.RegisterView`: it
feeds the very same `Registrar.decide` as the general path (one decision procedure), and the lane
renders the answer's bytes itself.

What it takes: one request whose every header line is plain (no folding), with exactly one Via
value (RFC 3261 branch), one plain Contact (``<sip:...>`` with unquoted parameters), a plain To
without tag, no body, no Path/Require/Route, a Request-URI ``sip:host[:port]``. Anything else
returns None from `read`, before any side effect, and takes the general path, which stays the
reference: for what the lane accepts it answers byte for byte what the general path answers
(tests/registrar/test_lane.py drives both with the same messages and compares).

Speed: `read` first asks the C reader (registrar/_lane_c.c, built when a compiler is at hand), which
takes the everyday shape only -- printable ASCII, plain spellings -- and returns exactly what
`read_py` returns, or None to pass the message on to `read_py`, which stays the reference and the
only place that refuses (tests/registrar/test_lane_c.py compares the two). SIPCORE_PURE_PYTHON=1 in
the environment turns the C reader off.

Retransmissions: the general path absorbs them in a non-INVITE server transaction (§17.2.2); the
lane keeps the answer's bytes for the same timer J under the same key (`AnswerCache`).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from typing import Literal, NamedTuple, Protocol

from sipcore.errors import SipParseError
from sipcore.flow import same_host, strip_brackets
from sipcore.grammar import TOKEN_CHARS, digits_value, split_plain_params
from sipcore.headers import COMPACT, canonical_name, parse_qvalue
from sipcore.message import MAGIC_COOKIE, REASONS, header_key, stable_tag
from sipcore.speedups import optional_extension
from sipcore.uri import _SIP_PLAIN, SipUri

_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9.])?"  # HOST_RE's hostname / IPv4 alternative
_TOKEN = rf"[{TOKEN_CHARS}]+"
_REQUEST_LINE = re.compile(rf"REGISTER (sip:({_HOST})(?::([0-9]{{1,5}}))?) SIP/2\.0\Z").match
# a name-addr without parameters inside <>: optional token words or a quoted display name
_DISPLAY = r'(?:[A-Za-z0-9.!%*_+`\'~-]+(?: +[A-Za-z0-9.!%*_+`\'~-]+)* *|"[^"\\\x00-\x1f]*" *)?'
_PARAMS = rf"((?:;{_TOKEN}(?:=[^;\s\",]+)?)*)"
_FROM = re.compile(rf'{_DISPLAY}<[^<>"\s:]*:[^<>"\s]*>(?:;{_TOKEN}(?:=[^;\s"]+)?)*\Z').match
_TO = re.compile(rf"{_DISPLAY}<sip:([^@:;?\s<>\"]+)@({_HOST})(?::([0-9]{{1,5}}))?>\Z").match
_CONTACT = re.compile(rf'{_DISPLAY}<(sip:[^<>"\s]+)>{_PARAMS}\Z').match
_CSEQ = re.compile(r"([0-9]{1,10}) REGISTER\Z").match

# headers the lane copies into the answer, reads, or leaves to the general path
_COPIED = frozenset({"via", "from", "to", "call-id", "cseq"})
_READ = frozenset({"contact", "expires", "authorization", "max-forwards", "user-agent", "content-length"})
_GENERAL_ONLY = frozenset(
    {"require", "proxy-require", "path", "route", "content-type", "content-encoding", "proxy-authorization"}
)
_ONCE = _COPIED | _READ


class LaneRequest(NamedTuple):
    """What the registrar needs of one REGISTER, as read by `read`: a `registrar.RegisterView`, and
    also the `registrar.ContactView` of its one Contact (a plain ``<sip:...>``, checked by `read`),
    which spares an object per request on the hot path.

    The fields are filled by position by `read_py` and by the C reader alike (same count and order);
    the properties give `Registrar.decide` the views' other names."""

    request_uri: str
    ruri_host: str
    ruri_port: int | None
    copied: tuple[tuple[str, str], ...]  # (name as sent, value) of Via/From/To/Call-ID/CSeq, answer order
    to_index: int  # position of To in ``copied`` (the answer adds its tag there)
    call_id: str
    cseq: int
    tag: str  # the answer's To tag (stable_tag, as the general path computes it)
    key: tuple[str, str, int, str]  # server transaction key (§17.2.3): branch, sent-by, method
    destination: tuple[str, int]  # where a UDP answer goes (§18.2.2 and RFC 3581)
    to_user: str
    to_host: str
    to_port: int | None
    # the one Contact, named as a ContactView reads it
    uri_text: str  # its URI, as sent
    expires: int | None  # its expires parameter
    q: int | None
    instance: str | None
    reg_id: str | None
    header_expires: int | None  # the Expires header
    authorization: str | None
    user_agent: str | None

    # -- RegisterView --
    @property
    def ruri(self) -> SipUri:
        return _host_uri(self.ruri_host, self.ruri_port)

    @property
    def to_sip(self) -> tuple[str, str, int | None]:
        return (self.to_user, self.to_host, self.to_port)

    @property
    def contacts(self) -> tuple[LaneRequest]:
        return (self,)

    @property
    def path(self) -> tuple[str, ...]:
        return ()  # a REGISTER with Path takes the general path

    @property
    def path_supported(self) -> bool:
        return False

    # -- ContactView of the one Contact (with the fields above) --
    @property
    def star(self) -> bool:
        return False

    @property
    def is_sip(self) -> bool:
        return True


@lru_cache(maxsize=256)
def _host_uri(host: str, port: int | None) -> SipUri:
    """``sip:host[:port]``, the Request-URI of a REGISTER: a handful per server, built once (read only)."""
    return SipUri("sip", None, host, port)


def read(data: bytes, remote: tuple[str, int]) -> LaneRequest | None:
    """The REGISTER in ``data`` (from ``remote``), or None when it is not one for the lane."""
    if _c_read is not None:
        req = _c_read(data, remote)
        if req is not None:
            return req
    return read_py(data, remote)


def read_py(data: bytes, remote: tuple[str, int]) -> LaneRequest | None:
    """`read` in Python: the reference, and the reader of whatever the C reader passes on."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 != len(data):  # no end of head, or a body / trailing bytes
        return None
    lines = data[:end].decode("utf-8", "surrogateescape").split("\r\n")
    line = _REQUEST_LINE(lines[0])
    if line is None:
        return None
    values: dict[str, str] = {}
    copied: list[tuple[str, str, str]] = []
    for text in lines[1:]:
        name, colon, value = text.partition(":")
        if not colon or not name or name[0] in " \t":
            return None  # folding, an empty line or no colon: the general path words the 400
        try:
            key = header_key(name)
        except SipParseError:
            return None
        if key in _ONCE:
            if key in values:
                return None  # a repeated header: identical or not, the general path decides
            value = value.strip()
            values[key] = value
            if key in _COPIED:
                copied.append((key, name.rstrip(), value))
        elif key in _GENERAL_ONLY:
            return None
    via_text = values.get("via")
    call_id = values.get("call-id")
    cseq_text = values.get("cseq")
    from_value = values.get("from")
    to_value = values.get("to")
    contact = values.get("contact")
    if via_text is None or not call_id or cseq_text is None or from_value is None or to_value is None:
        return None
    if contact is None:
        return None  # a query (no Contact): rare, general path
    # CSeq, Max-Forwards, Expires, Content-Length: the general path's checks, or leave it to it
    cseq_m = _CSEQ(cseq_text)
    if cseq_m is None or int(cseq_m.group(1)) >= 2**31:
        return None
    max_forwards = values.get("max-forwards")
    if max_forwards is not None and not (max_forwards.isdigit() and max_forwards.isascii()):
        return None
    header_expires = None
    expires_text = values.get("expires")
    if expires_text is not None:
        if not (expires_text.isdigit() and expires_text.isascii()) or digits_value(expires_text) > 2**40:
            return None
        header_expires = digits_value(expires_text)
    length = values.get("content-length")
    if length is not None and not (length.isdigit() and length.isascii() and digits_value(length) == 0):
        return None
    ruri_port = int(line.group(3)) if line.group(3) is not None else None
    if ruri_port is not None and ruri_port > 65535:
        return None
    # Via: one value, plain spelling, RFC 3261 branch
    via = stamped_via(via_text, remote)
    if via is None:
        return None
    via_value, branch, sent_by, destination = via
    if _FROM(from_value) is None:
        return None
    to_m = _TO(to_value)
    if to_m is None:
        return None
    to_user, to_host, to_port_text = to_m.groups()
    to_port = int(to_port_text) if to_port_text is not None else None
    if to_port is not None and to_port > 65535:
        return None
    contact_m = _CONTACT(contact)
    if contact_m is None:
        return None
    contact_uri, contact_params = contact_m.groups()
    uri_m = _SIP_PLAIN(contact_uri[4:])
    if uri_m is None or (uri_m.group(3) is not None and int(uri_m.group(3)) > 65535):
        return None
    params = _param_map(contact_params)
    param_expires = None
    expires_text = params.get("expires")
    if expires_text is not None:
        if not (expires_text.isdigit() and expires_text.isascii()):
            return None
        param_expires = min(digits_value(expires_text), 2**32 - 1)
    q = None
    q_text = params.get("q")
    if q_text is not None:
        try:
            q = parse_qvalue(q_text)
        except SipParseError:
            return None
    # the answer's copied headers: a Via the server stamped moves to the top under its full name,
    # as the general path's headers.add(first=True) puts it
    if via_value is not via_text:
        copied = [("via", "Via", via_value), *(c for c in copied if c[0] != "via")]
    to_index = next(i for i, c in enumerate(copied) if c[0] == "to")
    return LaneRequest(
        line.group(1), line.group(2), ruri_port, tuple((name, value) for _, name, value in copied), to_index,
        call_id, int(cseq_m.group(1)),
        stable_tag(f"{call_id}|{from_value}|{branch}"), (branch, *sent_by, "REGISTER"), destination,
        to_user, to_host, to_port, contact_uri, param_expires, q, params.get("+sip.instance"),
        params.get("reg-id"), header_expires, values.get("authorization"), values.get("user-agent"),
    )  # fmt: skip


_lane_c = optional_extension("registrar._lane_c")
if _lane_c is not None:
    _lane_c.setup(LaneRequest, stable_tag, same_host, COMPACT)
_c_read: Callable[[bytes, tuple[str, int]], LaneRequest | None] | None = _lane_c.read if _lane_c else None

_VIA = re.compile(
    rf"SIP/2\.0/(UDP|TCP|TLS|udp|tcp|tls) ({_HOST})(?::([0-9]{{1,5}}))?((?:;{_TOKEN}(?:=[^;\s\",]+)?)*)\Z"
).match


def stamped_via(
    text: str, remote: tuple[str, int]
) -> tuple[str, str, tuple[str, int], tuple[str, int]] | None:
    """(Via value after §18.2.1/RFC 3581 stamping, branch, sent-by key, UDP answer destination)."""
    m = _VIA(text)
    if m is None:
        return None
    transport, host, port_text, ptext = m.groups()
    port = int(port_text) if port_text is not None else None
    if port is not None and port > 65535:
        return None
    params = split_plain_params(ptext)
    pmap = _param_map(ptext)
    branch = pmap.get("branch")
    if not branch or not branch.startswith(MAGIC_COOKIE) or "maddr" in pmap:
        return None
    ip, source_port = remote
    changes: dict[str, str] = {}
    rport = pmap.get("rport")
    if rport == "":
        changes = {"rport": str(source_port), "received": ip}
    elif not same_host(host, ip):
        changes = {"received": ip}
    value = text
    if changes:
        kept = [(k, v) for k, v in params if k.lower() not in changes]
        kept.extend(changes.items())
        hp = host if port is None else f"{host}:{port}"
        value = f"SIP/2.0/{transport.upper()} {hp}" + "".join(
            f";{k}" if v is None else f";{k}={v}" for k, v in kept
        )
        pmap = _param_map("".join(f";{k}" if v is None else f";{k}={v}" for k, v in kept))
    dest_host = strip_brackets(pmap.get("received") or host)
    rport = pmap.get("rport")
    dest_port = digits_value(rport) if rport and rport.isascii() and rport.isdigit() else (port or 5060)
    sent_by_port = port if port is not None else 5060
    return value, branch, (host.lower(), sent_by_port), (dest_host, dest_port)


def _param_map(text: str) -> dict[str, str]:
    """``;a=b;c`` -> {lower-case name: value ('' for a flag)}, first occurrence winning (as param_map)."""
    out: dict[str, str] = {}
    if text:
        for part in text[1:].split(";"):
            name, _, value = part.partition("=")
            name = name.lower()
            if name not in out:
                out[name] = value
    return out


class Answered(Protocol):
    """What `render` reads of a request a lane took (`LaneRequest`, `invite_lane.InviteLaneRequest`)."""

    @property
    def copied(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def to_index(self) -> int: ...
    @property
    def tag(self) -> str: ...


def render(
    req: Answered, status: int, reason: str | None, headers: tuple[tuple[str, str], ...] | list[tuple[str, str]],
    server: str,
) -> bytes:  # fmt: skip
    """The answer's bytes, as the general path serialises them: the copied headers in the request's
    order (To with our tag), then ``headers`` under their canonical names, Server, Content-Length."""
    parts = [f"SIP/2.0 {status} {reason if reason is not None else REASONS.get(status, 'Unknown')}\r\n"]
    to_index = req.to_index
    for i, (name, value) in enumerate(req.copied):
        if i == to_index and status > 100:
            parts.append(f"{name}: {value};tag={req.tag}\r\n")
        else:
            parts.append(f"{name}: {value}\r\n")
    for name, value in headers:
        parts.append(f"{_canonical(name)}: {value}\r\n")
    parts.append(f"Server: {server}\r\nContent-Length: 0\r\n\r\n")
    return "".join(parts).encode("utf-8", "surrogateescape")


@lru_cache(maxsize=64)
def _canonical(name: str) -> str:
    """The canonical spelling of a header the registrar adds (a handful of names): computed once."""
    return canonical_name(header_key(name))


class AnswerCache:
    """Answers kept for retransmissions of the lane's requests: key -> bytes, for ``hold`` seconds
    (timer J, 64*T1, over UDP). A key held with None is in progress (an asynchronous store): its
    retransmissions are dropped, as a server transaction in Trying discards them (§17.2.2).

    Bounded against floods of uncredentialed REGISTERs: with ``max_entries`` answers kept, a 401
    challenge is sent without being kept (a stateless challenge, RFC 3261 §8.2.7: a retransmission
    gets a fresh one, which changes nothing for the phone), counted in ``not_kept``. Other answers
    are always kept: they follow a verified credential, whose retransmission must not be checked
    again (its nc would look replayed)."""

    __slots__ = ("_answers", "_expiry", "hold", "max_entries", "not_kept")

    def __init__(self, hold: float, max_entries: int = 16_384) -> None:
        self.hold = hold
        self.max_entries = max_entries
        self.not_kept = 0
        self._answers: dict[tuple[str, str, int, str], bytes | None] = {}
        self._expiry: deque[tuple[float, tuple[str, str, int, str]]] = deque()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: tuple[str, str, int, str], now: float) -> bytes | Literal[False] | None:
        """The answer kept for ``key``; None while in progress; False when there is none."""
        expiry = self._expiry
        answers = self._answers
        while expiry and expiry[0][0] <= now:
            answers.pop(expiry.popleft()[1], None)
        return answers.get(key, False)

    def pending(self, key: tuple[str, str, int, str], now: float) -> None:
        self._answers[key] = None
        self._expiry.append((now + self.hold, key))

    def keep(self, key: tuple[str, str, int, str], data: bytes, now: float) -> None:
        answers = self._answers
        if key not in answers:
            if len(answers) >= self.max_entries and data.startswith(b"SIP/2.0 401 "):
                self.get(key, now)  # purge what has expired
                if len(answers) >= self.max_entries:
                    self.not_kept += 1
                    return
            self._expiry.append((now + self.hold, key))
        answers[key] = data
