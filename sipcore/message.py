"""SIP message model, parser and serializer (RFC 3261 §7, §20, §25).

Parsing is split so the hot path pays only for what it uses: ``parse`` reads the start line, unfolds
and splits the header lines and frames the body; structured values (Via, From/To, CSeq, Contact…) are
parsed on first access and cached. ``validate`` checks what every request must carry, raising a
SipParseError that names the 400 (or 505) reason. Unknown headers keep their name and value text as
received and are serialized back unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from .errors import SipParseError
from .grammar import DIGITS_RE, SIP_VERSION_RE, STATUS_CODE_RE, digits_value, is_token
from .headers import (
    COMPACT,
    LIST_HEADERS,
    SINGLE_HEADERS,
    Contact,
    NameAddr,
    Via,
    canonical_name,
    parse_cseq,
    parse_uint,
    split_list,
)
from .randomness import BlockSource
from .speedups import optional_extension
from .uri import Uri, parse_uri

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    493: "Undecipherable", 500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}  # fmt: skip

MAGIC_COOKIE = "z9hG4bK"
_COPIED = frozenset({"via", "from", "call-id", "cseq"})  # copied into a response as they are (§8.2.6)
_ENC = "utf-8"
_ERR = "surrogateescape"  # bytes that are not UTF-8 survive a decode/encode round trip unchanged
ENCODING, ENCODING_ERRORS = _ENC, _ERR  # how header text maps to bytes, for byte-level edits elsewhere


STATELESS_TAG = "sl"  # To-tag prefix of INVITE answers sent without a transaction (before a stable_tag)


def stable_tag(data: bytes | str) -> str:
    """A To-tag that is the same for every retransmission of one request: a hash of what identifies
    it (stateless answers and the REGISTER lane stay consistent with the transaction path)."""
    raw = data.encode(_ENC, _ERR) if isinstance(data, str) else data
    return hashlib.blake2s(raw[:512], digest_size=6).hexdigest()


_TAGS = BlockSource(6)
_BRANCHES = BlockSource(8)


def new_tag() -> str:
    """48 random bits (RFC 3261 §19.3 asks for at least 32, cryptographically random)."""
    return _TAGS.take_hex()


def new_branch() -> str:
    """The magic cookie and 64 random bits: unique across space and time (§8.1.1.7)."""
    return MAGIC_COOKIE + _BRANCHES.take_hex()


class Headers:
    """Ordered header fields: entries are [key, name-as-sent, value] with key the lower-case full name."""

    __slots__ = ("_entries", "_index", "_raw")

    def __init__(self, entries: list[list[str]] | None = None) -> None:
        self._entries: list[list[str]] = entries if entries is not None else []
        self._index: dict[str, list[int]] | None = None
        self._raw: bytes | None = None  # a kept copy's bytes while its fields are unsplit

    @property
    def entries(self) -> list[list[str]]:
        entries = self._entries
        return entries if entries is not _UNSPLIT else self._split()

    def _split(self) -> list[list[str]]:
        """A kept copy's fields, split from its bytes at first read (``KeptHeaders``)."""
        raw = self._raw
        if raw is None:
            raise RuntimeError("unsplit header fields without their bytes")
        _, entries, index = split_fields(split_head(raw)[0])
        self._entries = entries
        self._index = index
        self._raw = None
        return entries

    def _idx(self) -> dict[str, list[int]]:
        index = self._index
        if index is None:
            entries = self._entries
            if entries is _UNSPLIT:
                self._split()
                return self._index  # type: ignore[return-value]
            index = {}
            for i, e in enumerate(entries):
                index.setdefault(e[0], []).append(i)
            self._index = index
        return index

    def __contains__(self, name: str) -> bool:
        return _key(name) in (self._index or self._idx())

    def get(self, name: str, default: str | None = None) -> str | None:
        """First field value (not split) of a header, or default."""
        positions = (self._index or self._idx()).get(_KEYS.get(name) or _key(name))
        return self._entries[positions[0]][2] if positions else default

    def get_fields(self, name: str) -> list[str]:
        """Every field value of a header, in order, not split on commas."""
        positions = (self._index or self._idx()).get(_KEYS.get(name) or _key(name))
        if not positions:
            return []
        entries = self._entries
        return [entries[positions[0]][2]] if len(positions) == 1 else [entries[i][2] for i in positions]

    def get_all(self, name: str) -> list[str]:
        """Every value, list headers split on commas (outside quotes/<>)."""
        key = _key(name)
        fields = self.get_fields(key)
        if key in LIST_HEADERS:
            out: list[str] = []
            for f in fields:
                out.extend(v for v in split_list(f) if v)
            return out
        return fields

    def count(self, name: str) -> int:
        return len(self._idx().get(_key(name), ()))

    def set(self, name: str, value: str) -> None:
        """Replace every field of this header by one value (kept at the first field's position)."""
        key = _key(name)
        positions = self._idx().get(key)
        if positions:
            first = positions[0]
            self.entries[first] = [key, self.entries[first][1], value]
            for i in reversed(positions[1:]):
                del self.entries[i]
        else:
            self.entries.append([key, canonical_name(key), value])
        self._index = None

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Add a field; ``first`` puts it before the existing fields of that header (Via, Record-Route)."""
        key = _key(name)
        entry = [key, canonical_name(key), value]
        if first:
            positions = self._idx().get(key)
            self.entries.insert(positions[0] if positions else 0, entry)
            self._index = None
        else:
            entries = self.entries
            index = self._index
            if index is not None:  # appending keeps every position: extend the index, do not rebuild it
                positions = index.get(key)
                if positions is None:
                    index[key] = [len(entries)]
                else:
                    positions.append(len(entries))
            entries.append(entry)

    def remove(self, name: str) -> None:
        key = _key(name)
        self._entries = [e for e in self.entries if e[0] != key]
        self._index = None

    def remove_first_value(self, name: str) -> str | None:
        """Remove the first value of a list header (e.g. the top Route), splitting a combined field."""
        key = _key(name)
        positions = self._idx().get(key)
        if not positions:
            return None
        i = positions[0]
        values = split_list(self.entries[i][2])
        top = values[0]
        if len(values) > 1:
            self.entries[i] = [key, self.entries[i][1], ", ".join(values[1:])]
        else:
            del self.entries[i]
        self._index = None
        return top

    def copy(self) -> Headers:
        return Headers([list(e) for e in self.entries])

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self.entries:
            yield name, value


_KEYS: dict[str, str] = {}


def _key(name: str) -> str:
    """Lookup key of a header name (lower-case full form), memoised: called many times per message."""
    key = _KEYS.get(name)
    if key is None:
        key = name.lower()
        key = COMPACT.get(key, key)
        if len(_KEYS) < 1024:
            _KEYS[name] = key
    return key


_UNSPLIT: list[list[str]] = []  # a kept copy's fields before they are read: never filled


class KeptHeaders(Headers):
    """A kept copy's header fields (``Message.kept_copy``), split from its bytes when first read.
    Until then the collector sees one object, not a list per field; they are rarely read (a
    retransmission is sent as bytes; matching an RFC 2543 ACK reads the To tag). Read-only."""

    __slots__ = ()

    def __init__(self, raw: bytes) -> None:
        self._entries = _UNSPLIT
        self._index = None
        self._raw = raw


class Message:
    """Fields and accessors shared by requests and responses."""

    __slots__ = ("_cache", "body", "headers", "raw", "version")
    is_request: bool = False

    def __init__(self, headers: Headers, body: bytes = b"", version: str = "SIP/2.0") -> None:
        self.headers = headers
        self.body = body
        self.version = version
        self.raw: bytes | None = None  # the exact bytes parsed (a kept copy: sent), while unmodified
        self._cache: dict[str, object] = {}

    # ---- structured accessors (parsed on first use, cached until invalidate()) ----------------
    @property
    def vias(self) -> list[Via]:
        cache = self._cache
        v = cache.get("vias")
        if v is None:
            values = self.headers.get_all("via")
            top = cache.get("top_via")  # the first value, parsed already: not parsed twice
            if top is not None and values:
                v = [top, *[Via.parse(x) for x in values[1:]]]  # type: ignore[list-item]
            else:
                v = [Via.parse(x) for x in values]
                if v:
                    cache["top_via"] = v[0]
            cache["vias"] = v
        return v  # type: ignore[return-value]

    @property
    def top_via(self) -> Via:
        v = self._cache.get("top_via")
        if v is None:
            fields = self.headers.get_fields("via")
            if not fields:
                raise SipParseError("missing Via header")
            first = fields[0]
            v = self._cache["top_via"] = Via.parse(split_list(first)[0] if "," in first else first)
        return v  # type: ignore[return-value]

    @property
    def branch(self) -> str | None:
        return self.top_via.branch

    @property
    def call_id(self) -> str:
        v = self._cache.get("call_id")
        if v is None:
            value = self.headers.get("call-id")
            if not value:
                raise SipParseError("missing Call-ID header")
            v = self._cache["call_id"] = value
        return v  # type: ignore[return-value]

    @property
    def cseq(self) -> tuple[int, str]:
        v = self._cache.get("cseq")
        if v is None:
            value = self.headers.get("cseq")
            if value is None:
                raise SipParseError("missing CSeq header")
            v = self._cache["cseq"] = parse_cseq(value)
        return v  # type: ignore[return-value]

    @property
    def from_(self) -> NameAddr:
        v = self._cache.get("from")
        if v is None:
            v = self._cache["from"] = _name_addr(self.headers.get("from"), "From")
        return v  # type: ignore[return-value]

    @property
    def to(self) -> NameAddr:
        v = self._cache.get("to")
        if v is None:
            v = self._cache["to"] = _name_addr(self.headers.get("to"), "To")
        return v  # type: ignore[return-value]

    @property
    def from_tag(self) -> str | None:
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        return self.to.tag

    @property
    def contacts(self) -> list[Contact]:
        v = self._cache.get("contacts")
        if v is None:
            v = self._cache["contacts"] = [Contact.parse(x) for x in self.headers.get_all("contact")]
        return v  # type: ignore[return-value]

    @property
    def max_forwards(self) -> int | None:
        cache = self._cache
        if "max_forwards" not in cache:
            value = self.headers.get("max-forwards")
            if value is None:
                cache["max_forwards"] = None
            else:
                value = value.strip()
                if DIGITS_RE.match(value) is None:
                    raise SipParseError("malformed Max-Forwards header")
                hops = digits_value(value)
                # RFC 4475 §3.1.2.4: out of range (> 255), treat as absent -- after invalidate() too
                cache["max_forwards"] = hops if hops <= 255 else None
        return cache["max_forwards"]  # type: ignore[return-value]

    @property
    def expires(self) -> int | None:
        cache = self._cache
        if "expires" not in cache:
            value = self.headers.get("expires")
            cache["expires"] = None if value is None else parse_uint(value, "Expires", 2**40)
        return cache["expires"]  # type: ignore[return-value]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() if value else None

    def option_tags(self, name: str) -> list[str]:
        return [v.strip() for v in self.headers.get_all(name) if v.strip()]

    def invalidate(self) -> None:
        """Forget cached structured values and the raw bytes after the headers were changed.

        The server transaction the edge attached (key ``txn``) is not a parsed value and is kept."""
        cache = self._cache
        txn = cache.get("txn")
        cache.clear()
        if txn is not None:
            cache["txn"] = txn
        self.raw = None

    # ---- serialization --------------------------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        if self.raw is not None:
            return self.raw
        parts = [self.start_line(), "\r\n"]
        has_cl = False
        body_len = str(len(self.body))
        for key, name, value in self.headers.entries:
            if key == "content-length":
                if has_cl:
                    continue
                has_cl = True
                value = body_len
            parts.append(f"{name}: {value}\r\n")
        if not has_cl:
            parts.append(f"Content-Length: {body_len}\r\n")
        parts.append("\r\n")
        return "".join(parts).encode(_ENC, _ERR) + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()

    def kept_copy(self) -> Message:
        """This message as a transaction keeps it once it only answers retransmissions: its bytes,
        sent again as they are, with its header fields split from them again only if read
        (``KeptHeaders``); nothing parsed is held. A server transaction lingers 32 s after its
        final response (Timer J, Timer L): holding full parses, each lingering call kept 143
        objects that every cyclic collection walks (seconds of pause at a few hundred calls/s;
        docs/architecture.md).

        A response is kept as it is sent: its bytes stay on it too (as ``raw``, until
        ``invalidate()`` as a parsed message's), so sending it costs no second serialization."""
        data = self.raw
        if data is None:
            data = self.serialize()
            if not self.is_request:
                self.raw = data
        copy = self._bare(KeptHeaders(data))
        copy.raw = data
        return copy

    def _bare(self, headers: Headers) -> Message:
        raise NotImplementedError


class Request(Message):
    __slots__ = ("method", "uri")
    is_request = True

    def __init__(
        self, method: str, uri: str, headers: Headers, body: bytes = b"", version: str = "SIP/2.0"
    ) -> None:
        super().__init__(headers, body, version)
        self.method = method
        self.uri = uri

    @property
    def ruri(self) -> Uri:
        v = self._cache.get("ruri")
        if v is None:
            v = self._cache["ruri"] = parse_uri(self.uri)
        return v  # type: ignore[return-value]

    def set_uri(self, uri: str) -> None:
        self.uri = uri
        self._cache.pop("ruri", None)
        self.raw = None

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def _bare(self, headers: Headers) -> Request:
        return Request(self.method, self.uri, headers, b"", self.version)

    def make_response(
        self,
        status: int,
        reason: str | None = None,
        to_tag: str | None = None,
        extra: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
    ) -> Response:
        """Response per §8.2.6: Via fields, From, To (tag added if missing), Call-ID and CSeq copied;
        then the ``extra`` headers, in order (as ``headers.add`` would append them)."""
        entries: list[list[str]] = []
        for e in self.headers.entries:
            key = e[0]
            if key in _COPIED:
                entries.append(list(e))
            elif key == "to":
                value = e[2]
                if to_tag and status > 100:
                    try:
                        has_tag = self.to.tag is not None
                    except SipParseError:
                        has_tag = ";tag=" in value.replace(" ", "").lower()
                    if not has_tag:
                        value = f"{value};tag={to_tag}"
                entries.append([key, e[1], value])
        for name, value in extra:
            key = _key(name)
            entries.append([key, canonical_name(key), value])
        resp = Response(
            status, reason if reason is not None else REASONS.get(status, "Unknown"), Headers(entries)
        )
        top_via = self._cache.get("top_via")
        if top_via is not None:  # the Via fields are copied as they are: so is their parsed top value
            resp._cache["top_via"] = top_via
        return resp

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self, status: int, reason: str, headers: Headers, body: bytes = b"", version: str = "SIP/2.0"
    ) -> None:
        super().__init__(headers, body, version)
        self.status = status
        self.reason = reason

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def _bare(self, headers: Headers) -> Response:
        return Response(self.status, self.reason, headers, b"", self.version)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _name_addr(value: str | None, what: str) -> NameAddr:
    if value is None:
        raise SipParseError(f"missing {what} header")
    return NameAddr.parse(value)


# ---- parsing ---------------------------------------------------------------------------------------


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the empty line; tolerate bare-LF line ends. Raises if the head never ends."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2 :]
    raise SipParseError("header section not terminated by an empty line")


_NAME_KEYS: dict[str, str] = {}

# The everyday header section split in C (sipcore/_message_c.c), when built; split_fields stays the
# reference and decides whatever the C code passes on (tests/sipcore/test_message_c.py).
_message_c = optional_extension("sipcore._message_c")
_c_split: (
    Callable[[bytes, dict[str, str]], tuple[str, list[list[str]], dict[str, list[int]]] | None] | None
) = _message_c.split if _message_c is not None else None


def _name_key(name: str) -> str:
    """Validate a header name as sent and map it to its key; valid names are remembered (bounded)."""
    stripped = name.rstrip()
    if not is_token(stripped):
        raise SipParseError(f"invalid header name {stripped[:40]!r}")
    key = stripped.lower()
    key = COMPACT.get(key, key)
    if len(_NAME_KEYS) < 4096:
        _NAME_KEYS[name] = key
    return key


def header_key(name: str) -> str:
    """The lookup key of a header name as sent (trailing blanks allowed, compact forms expanded);
    raises SipParseError for a name that is not a token. Shared with parse, memoised."""
    key = _NAME_KEYS.get(name)
    return key if key is not None else _name_key(name)


def split_fields(head: bytes) -> tuple[str, list[list[str]], dict[str, list[int]]]:
    """The start line, the header fields ([key, name-as-sent, value], folded lines unfolded) and
    their index by key of a header section; raises SipParseError. The reference of the C splitter
    (sipcore/_message_c.c), which answers the everyday sections itself."""
    text = head.decode(_ENC, _ERR)
    if "\r\n" in text:
        lines = text.split("\r\n")
    else:
        lines = text.split("\n")
    first = lines[0]
    entries: list[list[str]] = []
    index: dict[str, list[int]] = {}  # built here: every later lookup needs it
    last: list[str] | None = None
    folded: list[str] | None = None  # the pieces of ``last``'s folded value, joined once (linear time)
    for line in lines[1:]:
        if not line:
            continue
        c = line[0]
        if c == " " or c == "\t":
            if last is None:
                raise SipParseError("continuation line before the first header")
            if folded is None:
                folded = [last[2]]
            folded.append(line.strip())
            continue
        if folded is not None:
            last[2] = _unfold(folded)  # type: ignore[index]
            folded = None
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without a colon: {line[:40]!r}")
        key = _NAME_KEYS.get(name)
        if key is None:
            key = _name_key(name)
            name = name.rstrip()
        else:
            name = name.rstrip()
        last = [key, name, value.strip()]
        positions = index.get(key)
        if positions is None:
            index[key] = [len(entries)]
        else:
            positions.append(len(entries))
        entries.append(last)
    if folded is not None:
        last[2] = _unfold(folded)  # type: ignore[index]
    return first, entries, index


def header_fields(head: bytes) -> tuple[str, list[list[str]], dict[str, list[int]]]:
    """`split_fields` of a header section, by the C splitter when it takes it: as `parse` reads it."""
    split = _c_split(head, _NAME_KEYS) if _c_split is not None else None
    return split if split is not None else split_fields(head)


def parse(data: bytes, stream: bool = False) -> Request | Response:
    """Parse one message. On datagrams the body is framed by Content-Length (rest discarded; a
    shorter datagram is a 400). ``stream=True`` means the caller framed it already (TCP)."""
    # RFC 3261 §7.5: ignore CRLFs before the start line.
    start = 0
    while data[start : start + 2] == b"\r\n":
        start += 2
    if start:
        data = data[start:]
    head, body = split_head(data)
    first, entries, index = header_fields(head)
    headers = Headers(entries)
    headers._index = index

    if first.startswith("SIP/") or first[:4].upper() == "SIP/":
        msg: Request | Response = _response(first, headers)
    else:
        msg = _request(first, headers)

    # Body framing by Content-Length (RFC 3261 §18.3)
    cl_fields = headers.get_fields("content-length")
    if cl_fields:
        if len(cl_fields) > 1 and len({f.strip() for f in cl_fields}) > 1:
            raise SipParseError("conflicting Content-Length headers")
        cl_text = cl_fields[0].strip()
        if not cl_text.isdigit() or not cl_text.isascii():
            raise SipParseError("invalid Content-Length")
        length = digits_value(cl_text)
        if length > len(body):
            raise SipParseError("body shorter than Content-Length")
        if length < len(body):
            body = body[:length]
    elif stream:
        body = b""
    msg.body = body
    if (
        start == 0
        and len(data) == len(head) + len(body) + 4
        and data[len(head) : len(head) + 4] == b"\r\n\r\n"
    ):
        msg.raw = data  # unmodified bytes can be forwarded/retransmitted as they came
    return msg


def _unfold(pieces: list[str]) -> str:
    """A folded header value as one line: its non-empty (stripped) pieces joined by one space, in one
    pass (appending each continuation line to the value copied it again: quadratic in the lines)."""
    return " ".join(p for p in pieces if p)


def _request(first: str, headers: Headers) -> Request:
    parts = first.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("malformed Request-Line")
    method, uri, version = parts
    if not is_token(method):
        raise SipParseError("invalid method in Request-Line")
    if version != "SIP/2.0":
        m = SIP_VERSION_RE.match(version)
        if m is None:
            raise SipParseError("malformed SIP-Version in Request-Line")
        if (m.group(1), m.group(2)) != ("2", "0"):
            raise SipParseError("SIP version not supported", status=505)
        version = "SIP/2.0"
    return Request(method, uri, headers, b"", version)


def _response(first: str, headers: Headers) -> Response:
    version, _, rest = first.partition(" ")
    code, _, reason = rest.partition(" ")
    if not SIP_VERSION_RE.match(version) or not STATUS_CODE_RE.match(code):
        raise SipParseError("malformed Status-Line", status=None)
    return Response(int(code), reason, headers, b"", version)


_MANDATORY = ("via", "from", "to", "call-id", "cseq")


def validate_request(req: Request) -> None:
    """Check what every request must carry (RFC 3261 §8.1.1, §8.2); raises SipParseError (400)."""
    h = req.headers
    index = h._idx()
    entries = h.entries
    if len(index) < len(entries):  # some header appears more than once: is it a single-valued one?
        for key, positions in index.items():
            if len(positions) > 1 and key in SINGLE_HEADERS and len({entries[i][2] for i in positions}) > 1:
                raise SipParseError(f"multiple {canonical_name(key)} headers")
    missing = [n for n in _MANDATORY if n not in index]
    if missing:
        raise SipParseError("missing " + ", ".join(canonical_name(n) for n in missing))
    via_positions = index["via"]
    if len(via_positions) == 1 and "," not in entries[via_positions[0]][2]:
        req.top_via  # noqa: B018 - the only Via value
    else:
        req.vias  # noqa: B018 - parses every Via value
    req.call_id  # noqa: B018
    _number, method = req.cseq
    if method != req.method:
        raise SipParseError("CSeq method does not match the Request-Line")
    req.from_  # noqa: B018
    req.to  # noqa: B018
    if "max-forwards" in index:
        req.max_forwards  # noqa: B018 - malformed raises; out of range reads as absent
    ruri = req.ruri
    if getattr(ruri, "headers", None) is not None:
        raise SipParseError("Request-URI must not contain headers")
    exp_pos = index.get("expires")
    if exp_pos is not None and not entries[exp_pos[0]][2].isdigit():
        raise SipParseError("malformed Expires header")


def validate_response(resp: Response) -> None:
    """A response must at least carry a usable top Via and CSeq to be matched; else it is dropped."""
    try:
        resp.top_via  # noqa: B018
        resp.cseq  # noqa: B018
        resp.call_id  # noqa: B018
    except SipParseError as exc:
        raise SipParseError(exc.reason, status=None) from exc


def error_response(data: bytes, status: int, reason: str, to_tag: str | None = None) -> Response | None:
    """Best-effort error answer to bytes that failed to parse: the header lines are read leniently
    (start line, body and unusable headers ignored) to copy Via/From/To/Call-ID/CSeq. None when no
    response can be routed (no parseable Via) or the bytes are a response."""
    head = data.split(b"\r\n\r\n", 1)[0]
    text = head.decode(_ENC, _ERR)
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].upper().startswith("SIP/"):
        return None
    entries: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and entries:
            entries[-1][2] = (entries[-1][2] + " " + line.strip()).strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = COMPACT.get(name.strip().lower(), name.strip().lower())
        if key in ("via", "from", "to", "call-id", "cseq"):
            entries.append([key, canonical_name(key), value.strip()])
    fake = Request("UNKNOWN", "sip:invalid", Headers(entries))
    try:
        fake.top_via  # noqa: B018 - a response must be routable by its top Via
    except SipParseError:
        return None
    if len(reason) > 120:
        reason = reason[:120]
    reason = "".join(c if c.isprintable() else "?" for c in reason)
    return fake.make_response(status, reason, to_tag)
