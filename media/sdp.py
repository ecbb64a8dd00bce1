"""SDP (RFC 4566) parsing and serialising, and offer/answer (RFC 3264) for one audio stream.

The media service talks G.711 (PCMU, PCMA) with RFC 4733 telephone-events to desk phones and
softphones. ``parse`` turns a body into frozen values and raises only ``SdpError`` (a fuzz test holds
it to that); ``answer_offer`` picks the offerer's first codec we support and mirrors the direction,
rejecting (port 0) every other stream; ``build_offer``/``accept_answer`` are the other side, for calls
the service originates. Errors carry the SIP status the user agent answers with: 400 for a malformed
body, 488 for an offer we cannot serve.

Lines kept: v, o, s, c, b, t, m and a (rtpmap, fmtp, ptime, direction, the rest verbatim). Lines we
never act on (i, u, e, p, r, z, k) are skipped, as RFC 4566 §5 lets a parser ignore what it does not
use; serialising a parsed description therefore drops them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = [
    "PCMA",
    "PCMU",
    "Answer",
    "Codec",
    "Connection",
    "Direction",
    "Fmtp",
    "MediaDescription",
    "NegotiatedAudio",
    "Origin",
    "RtpMap",
    "SdpError",
    "SdpNotAcceptable",
    "SdpParseError",
    "SessionDescription",
    "Timing",
    "accept_answer",
    "answer_offer",
    "build_offer",
    "next_version",
    "parse",
]


class SdpError(ValueError):
    """Any SDP problem; ``status``/``reason`` are what the user agent answers the INVITE with."""

    status = 400
    reason = "Bad Request"


class SdpParseError(SdpError):
    """The body is not valid SDP (400)."""


class SdpNotAcceptable(SdpError):
    """Valid SDP we cannot serve: no audio stream with a codec in common (488, RFC 3261 §21.4.26)."""

    status = 488
    reason = "Not Acceptable Here"


class Direction(StrEnum):
    """The stream direction attribute (RFC 4566 §6), from the describing party's point of view."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def mirrored(self) -> Direction:
        """The answer's direction for an offer with this one (RFC 3264 §6.1)."""
        return _MIRROR[self]

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)


_MIRROR = {
    Direction.SENDRECV: Direction.SENDRECV,
    Direction.SENDONLY: Direction.RECVONLY,
    Direction.RECVONLY: Direction.SENDONLY,
    Direction.INACTIVE: Direction.INACTIVE,
}


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=IN IP4 192.0.2.1``; a multicast ``/ttl`` suffix is kept in ``address`` as written."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def host(self) -> str:
        """The address without a multicast ttl/count suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """``c=IN IP4 0.0.0.0``: the RFC 2543 way of putting a call on hold (send nothing there)."""
        return self.host in ("0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=`` (RFC 4566 §5.2): a new version number tells the peer the description changed."""

    username: str
    session_id: int
    session_version: int
    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Timing:
    """``t=<start> <stop>``; ``0 0`` (the only value phones use) is a permanent session."""

    start: int = 0
    stop: int = 0


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


@dataclass(frozen=True, slots=True)
class Fmtp:
    """``a=fmtp:<format> <parameters>``; the parameters are opaque to us except telephone-event's."""

    format: str
    parameters: str

    def __str__(self) -> str:
        return f"{self.format} {self.parameters}"


# RFC 3551 table 4: the static payload types a phone may offer without an rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    0: RtpMap(0, "PCMU", 8000, 1),
    3: RtpMap(3, "GSM", 8000, 1),
    4: RtpMap(4, "G723", 8000, 1),
    8: RtpMap(8, "PCMA", 8000, 1),
    9: RtpMap(9, "G722", 8000, 1),
    18: RtpMap(18, "G729", 8000, 1),
}


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One ``m=`` section. ``attributes`` holds the ``a=`` lines not parsed into the other fields."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: tuple[str, ...] = ()
    rtpmaps: tuple[RtpMap, ...] = ()
    fmtps: tuple[Fmtp, ...] = ()
    ptime: int | None = None
    direction: Direction | None = None
    attributes: tuple[tuple[str, str | None], ...] = ()

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The payload type's mapping: its ``a=rtpmap``, else the static RFC 3551 one."""
        for item in self.rtpmaps:
            if item.payload_type == payload_type:
                return item
        return STATIC_PAYLOAD_TYPES.get(payload_type)

    def fmtp(self, fmt: str) -> str | None:
        for item in self.fmtps:
            if item.format == fmt:
                return item.parameters
        return None

    def attribute(self, name: str) -> str | None:
        """The first other attribute of that name (``""`` for a flag attribute), None if absent."""
        for key, value in self.attributes:
            if key == name:
                return "" if value is None else value
        return None

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={b}" for b in self.bandwidths)
        out.extend(f"a=rtpmap:{r}" for r in self.rtpmaps)
        out.extend(f"a=fmtp:{f}" for f in self.fmtps)
        if self.ptime is not None:
            out.append(f"a=ptime:{self.ptime}")
        out.extend(_attribute_line(k, v) for k, v in self.attributes)
        if self.direction is not None:
            out.append(f"a={self.direction}")
        return out


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body. ``direction`` here is the session-level default for every stream."""

    origin: Origin
    media: tuple[MediaDescription, ...] = ()
    session_name: str = "-"
    connection: Connection | None = None
    bandwidths: tuple[str, ...] = ()
    timing: tuple[Timing, ...] = (Timing(),)
    direction: Direction | None = None
    attributes: tuple[tuple[str, str | None], ...] = ()
    version: int = 0

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """The stream's address: its own ``c=`` line, else the session's (RFC 4566 §5.7)."""
        return media.connection if media.connection is not None else self.connection

    def direction_for(self, media: MediaDescription) -> Direction:
        """Media-level direction, else session-level, else sendrecv (RFC 3264 §5.1)."""
        return media.direction or self.direction or Direction.SENDRECV

    def to_bytes(self) -> bytes:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines.extend(f"b={b}" for b in self.bandwidths)
        lines.extend(f"t={t.start} {t.stop}" for t in self.timing)
        lines.extend(_attribute_line(k, v) for k, v in self.attributes)
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        for media in self.media:
            lines.extend(media.lines())
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _attribute_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


# --- parsing -----------------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"  # RFC 4566 token
_RE_TOKEN = re.compile(_TOKEN)
_RE_INT = re.compile(r"[0-9]{1,20}")  # ASCII digits only: int() also takes other scripts' digits
_RE_PORT = re.compile(r"([0-9]{1,5})(?:/([0-9]{1,5}))?")
_RE_PT = re.compile(r"[0-9]{1,3}")
_RE_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,253})")  # an FQDN, loosely
_RE_RTPMAP = re.compile(r"([0-9]{1,3}) +([^/ ]+)/([0-9]{1,9})(?:/([0-9]{1,3}))?")
_RE_PTIME = re.compile(r"([0-9]{1,6})(?:\.[0-9]{1,6})?")
_RE_BANDWIDTH = re.compile(_TOKEN + r":[0-9]{1,12}")
_RE_ATTR_NAME = re.compile(_TOKEN)
_SKIPPED = frozenset("iuepzkr")
_DIRECTIONS = {d.value: d for d in Direction}


def _int(text: str, what: str) -> int:
    if not _RE_INT.fullmatch(text):
        raise SdpParseError(f"{what}: {text!r} is not a number")
    return int(text)


def _address(addrtype: str, address: str, what: str) -> str:
    """Check a unicast/multicast address of the stated type; keeps ``/ttl`` suffixes as written."""
    host, _, tail = address.partition("/")
    if tail and not re.fullmatch(r"[0-9]{1,5}(?:/[0-9]{1,5})?", tail):
        raise SdpParseError(f"{what}: bad address suffix {address!r}")
    if addrtype == "IP6":
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            if not _RE_HOST.fullmatch(host):
                raise SdpParseError(f"{what}: {host!r} is not an IPv6 address") from None
    elif addrtype == "IP4":
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise SdpParseError(f"{what}: {host!r} is not an IPv4 address") from None
        elif not _RE_HOST.fullmatch(host):
            raise SdpParseError(f"{what}: {host!r} is not an address")
    else:
        raise SdpParseError(f"{what}: unknown address type {addrtype!r}")
    return address


def _connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpParseError(f"c= needs 3 fields: {value!r}")
    nettype, addrtype, address = parts
    if nettype != "IN":
        raise SdpParseError(f"c=: unknown network type {nettype!r}")
    return Connection(_address(addrtype, address, "c="), addrtype, nettype)


def _origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpParseError(f"o= needs 6 fields: {value!r}")
    username, sess_id, sess_version, nettype, addrtype, address = parts
    if nettype != "IN":
        raise SdpParseError(f"o=: unknown network type {nettype!r}")
    return Origin(
        username,
        _int(sess_id, "o= session id"),
        _int(sess_version, "o= session version"),
        _address(addrtype, address, "o="),
        addrtype,
        nettype,
    )


def _timing(value: str) -> Timing:
    parts = value.split()
    if len(parts) != 2:
        raise SdpParseError(f"t= needs 2 fields: {value!r}")
    return Timing(_int(parts[0], "t= start"), _int(parts[1], "t= stop"))


def _payload_type(text: str, what: str) -> int:
    if not _RE_PT.fullmatch(text) or int(text) > 127:
        raise SdpParseError(f"{what}: {text!r} is not an RTP payload type (0-127)")
    return int(text)


class _MediaBuilder:
    """Collects one m= section's lines while parsing (the frozen value is built at the end)."""

    def __init__(self, value: str) -> None:
        parts = value.split()
        if len(parts) < 4:
            raise SdpParseError(f"m= needs media, port, proto and at least one format: {value!r}")
        self.media, port, self.proto, *formats = parts
        if not _RE_TOKEN.fullmatch(self.media) or not re.fullmatch(r"[A-Za-z0-9/._\-]+", self.proto):
            raise SdpParseError(f"m=: bad media or proto in {value!r}")
        match = _RE_PORT.fullmatch(port)
        if match is None or int(match[1]) > 65535:
            raise SdpParseError(f"m=: bad port {port!r}")
        self.port = int(match[1])
        self.port_count = int(match[2]) if match[2] is not None else None
        if self.port_count is not None and self.port_count < 1:
            raise SdpParseError(f"m=: bad port count {port!r}")
        self.rtp = self.proto.upper().startswith("RTP/")
        for fmt in formats:
            if self.rtp:
                _payload_type(fmt, "m= format")
            elif not _RE_TOKEN.fullmatch(fmt):
                raise SdpParseError(f"m=: bad format {fmt!r}")
        self.formats = tuple(formats)
        self.connection: Connection | None = None
        self.bandwidths: list[str] = []
        self.rtpmaps: list[RtpMap] = []
        self.fmtps: list[Fmtp] = []
        self.ptime: int | None = None
        self.direction: Direction | None = None
        self.attributes: list[tuple[str, str | None]] = []

    def attribute(self, name: str, value: str | None) -> None:
        if name in _DIRECTIONS and value is None:
            self.direction = _DIRECTIONS[name]
        elif name == "rtpmap" and value is not None:
            match = _RE_RTPMAP.fullmatch(value.strip())
            if match is None:
                raise SdpParseError(f"a=rtpmap: malformed {value!r}")
            pt = _payload_type(match[1], "a=rtpmap")
            rate = int(match[3])
            if rate == 0:
                raise SdpParseError(f"a=rtpmap: clock rate 0 in {value!r}")
            channels = int(match[4]) if match[4] is not None else None
            if any(r.payload_type == pt for r in self.rtpmaps):
                raise SdpParseError(f"a=rtpmap: payload type {pt} mapped twice")
            self.rtpmaps.append(RtpMap(pt, match[2], rate, channels))
        elif name == "fmtp" and value is not None:
            fmt, _, params = value.partition(" ")
            if not fmt or not _RE_TOKEN.fullmatch(fmt):
                raise SdpParseError(f"a=fmtp: malformed {value!r}")
            self.fmtps.append(Fmtp(fmt, params.strip()))
        elif name == "ptime" and value is not None:
            match = _RE_PTIME.fullmatch(value.strip())
            if match is None or int(match[1]) == 0:
                raise SdpParseError(f"a=ptime: malformed {value!r}")
            self.ptime = int(match[1])
        else:
            self.attributes.append((name, value))

    def build(self) -> MediaDescription:
        return MediaDescription(
            media=self.media,
            port=self.port,
            proto=self.proto,
            formats=self.formats,
            port_count=self.port_count,
            connection=self.connection,
            bandwidths=tuple(self.bandwidths),
            rtpmaps=tuple(self.rtpmaps),
            fmtps=tuple(self.fmtps),
            ptime=self.ptime,
            direction=self.direction,
            attributes=tuple(self.attributes),
        )


def _split_attribute(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    if not _RE_ATTR_NAME.fullmatch(name):
        raise SdpParseError(f"a=: bad attribute name in {value!r}")
    return name, (rest if colon else None)


def parse(body: bytes | str) -> SessionDescription:
    """Parse an SDP body; raises ``SdpParseError`` (400) for anything malformed, nothing else.

    Lenient where phones differ and it costs nothing: LF or CRLF line ends, trailing blank lines,
    a missing ``t=`` line, unknown line types and attributes (kept or skipped, never refused).
    Strict where a wrong guess would send audio to the wrong place: v=0 first, one o=, valid
    addresses and ports, and an address (session or media ``c=``) for every stream with a port.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpParseError(f"SDP is not UTF-8 (byte {exc.start})") from None
    else:
        text = body
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise SdpParseError("SDP text holds a lone surrogate") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise SdpParseError("SDP must start with v=0")

    origin: Origin | None = None
    session_name: str | None = None
    connection: Connection | None = None
    bandwidths: list[str] = []
    timing: list[Timing] = []
    direction: Direction | None = None
    attributes: list[tuple[str, str | None]] = []
    media: list[_MediaBuilder] = []

    for number, line in enumerate(lines[1:], start=2):
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpParseError(f"line {number} is not <type>=<value>: {line[:40]!r}")
        kind, value = line[0], line[2:]
        current = media[-1] if media else None
        if kind == "m":
            media.append(_MediaBuilder(value))
        elif kind == "a":
            name, attr_value = _split_attribute(value)
            if current is not None:
                current.attribute(name, attr_value)
            elif name in _DIRECTIONS and attr_value is None:
                direction = _DIRECTIONS[name]
            else:
                attributes.append((name, attr_value))
        elif kind == "c":
            if current is None:
                if connection is not None:
                    raise SdpParseError("two session-level c= lines")
                connection = _connection(value)
            else:
                # RFC 4566 allows several c= lines per m= for layered multicast; we use the first.
                if current.connection is None:
                    current.connection = _connection(value)
        elif kind == "b":
            if not _RE_BANDWIDTH.fullmatch(value):
                raise SdpParseError(f"b=: malformed {value!r}")
            (current.bandwidths if current is not None else bandwidths).append(value)
        elif current is not None:
            if kind in "ovst":
                raise SdpParseError(f"{kind}= line inside a media section (line {number})")
            # i= and k= at media level: skipped.
        elif kind == "o":
            if origin is not None:
                raise SdpParseError("two o= lines")
            origin = _origin(value)
        elif kind == "s":
            if session_name is not None:
                raise SdpParseError("two s= lines")
            session_name = value
        elif kind == "t":
            timing.append(_timing(value))
        elif kind == "v":
            raise SdpParseError("a second v= line")
        # i u e p r z k and unknown types: skipped (RFC 4566 §5).

    if origin is None:
        raise SdpParseError("no o= line")
    built = tuple(m.build() for m in media)
    for index, m in enumerate(built):
        if m.port != 0 and m.connection is None and connection is None:
            raise SdpParseError(f"m= line {index} has no address (no c= line)")
    return SessionDescription(
        origin=origin,
        media=built,
        session_name=session_name if session_name is not None else "-",
        connection=connection,
        bandwidths=tuple(bandwidths),
        timing=tuple(timing) or (Timing(),),
        direction=direction,
        attributes=tuple(attributes),
    )


# --- offer/answer ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """An audio codec we can send and receive; ``payload_type`` is its static number (RFC 3551)."""

    name: str
    payload_type: int
    clock_rate: int = 8000

    def matches(self, rtpmap: RtpMap) -> bool:
        return (
            rtpmap.encoding.upper() == self.name.upper()
            and rtpmap.clock_rate == self.clock_rate
            and rtpmap.channels in (None, 1)
        )


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
TELEPHONE_EVENT = "telephone-event"
DEFAULT_DTMF_PAYLOAD_TYPE = 101
DTMF_EVENTS = "0-16"  # digits, * # A-D and flash (RFC 4733 §3.2)


@dataclass(frozen=True, slots=True)
class NegotiatedAudio:
    """What the RTP side needs from a completed offer/answer.

    ``payload_type`` is the number the *offer* used for the codec (a phone may map PCMU to 96 by
    rtpmap); both sides use it. ``direction`` is ours: ``direction.sends`` says whether we may send.
    ``remote`` is where the SDP says to send; symmetric RTP (``rtp.RtpStream``) may correct it.
    """

    codec: Codec
    payload_type: int
    remote_host: str
    remote_port: int
    direction: Direction
    dtmf_payload_type: int | None = None
    remote_ptime: int | None = None
    media_index: int = 0

    @property
    def remote(self) -> tuple[str, int]:
        return (self.remote_host, self.remote_port)

    @property
    def may_send(self) -> bool:
        """We may send audio: our direction sends and the peer did not hold with 0.0.0.0."""
        return self.direction.sends and self.remote_host not in ("0.0.0.0", "::") and self.remote_port != 0


@dataclass(frozen=True, slots=True)
class Answer:
    sdp: SessionDescription
    audio: NegotiatedAudio


def _addrtype(address: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"  # a host name: RFC 4566 lets c= carry an FQDN


def _pick_codec(m: MediaDescription, supported: Sequence[Codec]) -> tuple[Codec, int] | None:
    """The offerer's first format (its preference order, RFC 3264 §5.1) that we support."""
    for fmt in m.formats:
        pt = int(fmt)
        rtpmap = m.rtpmap(pt)
        if rtpmap is None:
            continue
        for codec in supported:
            if codec.matches(rtpmap):
                return codec, pt
    return None


def _pick_dtmf(m: MediaDescription, clock_rate: int) -> int | None:
    for fmt in m.formats:
        rtpmap = m.rtpmap(int(fmt))
        if (
            rtpmap is not None
            and rtpmap.encoding.lower() == TELEPHONE_EVENT
            and rtpmap.clock_rate == clock_rate
        ):
            return rtpmap.payload_type
    return None


def _rejected(m: MediaDescription) -> MediaDescription:
    """RFC 3264 §6: a refused stream is answered with port 0, same media and proto, one format."""
    return MediaDescription(media=m.media, port=0, proto=m.proto, formats=m.formats[:1])


def _audio_section(
    *,
    port: int,
    codecs: Iterable[tuple[Codec, int]],
    dtmf_payload_type: int | None,
    ptime: int,
    direction: Direction,
) -> MediaDescription:
    formats: list[str] = []
    rtpmaps: list[RtpMap] = []
    for codec, pt in codecs:
        formats.append(str(pt))
        rtpmaps.append(RtpMap(pt, codec.name, codec.clock_rate))
    fmtps: tuple[Fmtp, ...] = ()
    if dtmf_payload_type is not None:
        formats.append(str(dtmf_payload_type))
        rtpmaps.append(RtpMap(dtmf_payload_type, TELEPHONE_EVENT, 8000))
        fmtps = (Fmtp(str(dtmf_payload_type), DTMF_EVENTS),)
    return MediaDescription(
        media="audio",
        port=port,
        proto="RTP/AVP",
        formats=tuple(formats),
        rtpmaps=tuple(rtpmaps),
        fmtps=fmtps,
        ptime=ptime,
        direction=direction,
    )


def answer_offer(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    session_id: int,
    session_version: int = 1,
    supported: Sequence[Codec] = (PCMU, PCMA),
    ptime: int = 20,
    username: str = "sipcore",
) -> Answer:
    """Answer an offer (RFC 3264 §6): the first audio stream we can serve is accepted, every other
    stream gets port 0, and one m= line is answered per offered one, in order.

    We accept plain ``RTP/AVP`` only: SRTP (``RTP/SAVP``) and WebRTC profiles need keys and ICE the
    service does not have. Raises ``SdpNotAcceptable`` (488) when no stream is usable.
    """
    chosen: NegotiatedAudio | None = None
    sections: list[MediaDescription] = []
    why = "no audio stream offered"
    for index, m in enumerate(offer.media):
        if chosen is not None or m.media != "audio" or m.port == 0:
            sections.append(_rejected(m))
            continue
        if m.proto.upper() != "RTP/AVP":
            why = f"audio stream with unsupported profile {m.proto}"
            sections.append(_rejected(m))
            continue
        picked = _pick_codec(m, supported)
        if picked is None:
            why = "no codec in common (we take " + ", ".join(c.name for c in supported) + ")"
            sections.append(_rejected(m))
            continue
        codec, pt = picked
        dtmf = _pick_dtmf(m, codec.clock_rate)
        connection = offer.connection_for(m)
        assert connection is not None  # parse() guarantees one for a stream with a port
        direction = offer.direction_for(m).mirrored()
        chosen = NegotiatedAudio(
            codec=codec,
            payload_type=pt,
            remote_host=connection.host,
            remote_port=m.port,
            direction=direction,
            dtmf_payload_type=dtmf,
            remote_ptime=m.ptime,
            media_index=index,
        )
        sections.append(
            _audio_section(
                port=port,
                codecs=[(codec, pt)],
                dtmf_payload_type=dtmf,
                ptime=ptime,
                direction=direction,
            )
        )
    if chosen is None:
        raise SdpNotAcceptable(why)
    sdp = SessionDescription(
        origin=Origin(username, session_id, session_version, address, _addrtype(address)),
        media=tuple(sections),
        connection=Connection(address, _addrtype(address)),
        timing=offer.timing,
    )
    return Answer(sdp, chosen)


def build_offer(
    *,
    address: str,
    port: int,
    session_id: int,
    session_version: int = 1,
    codecs: Sequence[Codec] = (PCMU, PCMA),
    dtmf_payload_type: int | None = DEFAULT_DTMF_PAYLOAD_TYPE,
    ptime: int = 20,
    direction: Direction = Direction.SENDRECV,
    username: str = "sipcore",
) -> SessionDescription:
    """An offer with one audio stream, our codecs in preference order (for calls we originate)."""
    if not codecs:
        raise ValueError("an offer needs at least one codec")
    return SessionDescription(
        origin=Origin(username, session_id, session_version, address, _addrtype(address)),
        media=(
            _audio_section(
                port=port,
                codecs=[(c, c.payload_type) for c in codecs],
                dtmf_payload_type=dtmf_payload_type,
                ptime=ptime,
                direction=direction,
            ),
        ),
        connection=Connection(address, _addrtype(address)),
    )


def accept_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedAudio:
    """Read the answer to our ``build_offer``: the first accepted audio stream, with a codec we
    offered (RFC 3264 §6.1 forbids others). Raises ``SdpNotAcceptable`` if the peer refused it all,
    ``SdpParseError`` if the answer breaks offer/answer rules (different m= count, foreign codec).
    """
    if len(answer.media) != len(offer.media):
        raise SdpParseError(f"answer has {len(answer.media)} m= lines for {len(offer.media)} offered")
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True)):
        if theirs.port == 0 or ours.media != "audio" or theirs.media != "audio":
            continue
        if theirs.proto.upper() != ours.proto.upper():  # its formats may not even be payload types
            raise SdpParseError(f"answer changed the stream's profile {ours.proto} to {theirs.proto}")
        offered = [
            (codec, int(fmt))
            for fmt in ours.formats
            if (rtpmap := ours.rtpmap(int(fmt))) is not None
            for codec in (PCMU, PCMA)
            if codec.matches(rtpmap)
        ]
        picked = _pick_codec(theirs, [c for c, _ in offered])
        if picked is None:
            raise SdpParseError("answer picked a codec we did not offer")
        codec, pt = picked
        connection = answer.connection_for(theirs)
        assert connection is not None
        ours_dir = offer.direction_for(ours)
        theirs_dir = answer.direction_for(theirs)
        # Our effective direction: we send only if we offered to and they agreed to receive.
        sends = ours_dir.sends and theirs_dir.receives
        receives = ours_dir.receives and theirs_dir.sends
        direction = (
            Direction.SENDRECV
            if sends and receives
            else Direction.SENDONLY
            if sends
            else Direction.RECVONLY
            if receives
            else Direction.INACTIVE
        )
        return NegotiatedAudio(
            codec=codec,
            payload_type=pt,
            remote_host=connection.host,
            remote_port=theirs.port,
            direction=direction,
            dtmf_payload_type=_pick_dtmf(theirs, codec.clock_rate),
            remote_ptime=theirs.ptime,
            media_index=index,
        )
    raise SdpNotAcceptable("the answer refused every audio stream")


def next_version(sdp: SessionDescription) -> SessionDescription:
    """The same description with ``o=`` version + 1, as a re-offer must carry (RFC 3264 §8)."""
    origin = sdp.origin
    return replace(sdp, origin=replace(origin, session_version=origin.session_version + 1))
