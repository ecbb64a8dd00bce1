"""Properties of the SIP parser (sipcore/message.py, headers.py, uri.py, grammar.py, framing.py).

- Round trip: a generated valid message serialises and reparses to the same start line, headers,
  body and structured values; for *any* bytes that parse, serialising the parsed message is a fixed
  point (parse → serialise → parse → serialise gives the same bytes and the same accept/reject).
- One error type: whatever the bytes, the parser and every accessor the server calls either return
  or raise SipParseError (error_response, which runs on the failure path, never raises at all).
- Linear time: the Python-level work (bytecodes executed, counted exactly: no clock) grows at most
  linearly with a repeated piece, and the whole parse (C-level string and regex work included) of
  8n repetitions costs no more than a generous multiple of n's, measured relatively (see
  test_parse_time_grows_linearly).

tests/sipcore/test_parser.py holds the hand-written cases and the first random-bytes checks; this
file extends them with generated messages.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sipcore import grammar, headers, uri
from sipcore.errors import SipParseError
from sipcore.flow import stamp_via
from sipcore.framing import FramingFailed, PingReceived, StreamFramer
from sipcore.message import Request, Response, error_response, parse, validate_request, validate_response

# ---- generated valid messages --------------------------------------------------------------------

_TOKEN_ALPHABET = "abcXYZ09-.!%*_+`'~"
token = st.text(_TOKEN_ALPHABET, min_size=1, max_size=10)
_label = st.text("abcdefxyz0189", min_size=1, max_size=8)
hostname = st.lists(_label, min_size=1, max_size=3).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.sampled_from(["[::1]", "[2001:db8::10]", "[fe80::1:2:3]", "[::ffff:192.0.2.1]"])
host = st.one_of(hostname, ipv4, ipv6)
port = st.one_of(st.none(), st.integers(1, 65535))
user = st.text("abcXYZ0129+-_.!~*'()&=$,", min_size=1, max_size=10)
param_value = st.text("abcXYZ0129-_.!~*+", min_size=1, max_size=10)
params = st.lists(st.tuples(token, st.one_of(st.none(), param_value)), max_size=3)


def _params_text(ps: list[tuple[str, str | None]]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in ps)


def _hostport(h: str, p: int | None) -> str:
    return h if p is None else f"{h}:{p}"


@st.composite
def sip_uris(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    u = draw(st.one_of(st.none(), user))
    h, p = draw(host), draw(port)
    ps = draw(params.filter(lambda ps: all(k.lower() not in ("lr",) or v is None for k, v in ps)))
    text = f"{scheme}:{'' if u is None else u + '@'}{_hostport(h, p)}{_params_text(ps)}"
    return text, {"scheme": scheme, "user": u, "host": h, "port": p, "params": ps}


@st.composite
def name_addrs(draw: st.DrawFn, tag: bool) -> tuple[str, dict[str, object]]:
    uri_text, fields = draw(sip_uris())
    display = draw(
        st.one_of(
            st.none(),
            st.lists(token, min_size=1, max_size=3).map(" ".join),
            st.text("abc XYZ,;:<>@\\'é", max_size=12).map(lambda t: '"' + t.replace("\\", "\\\\") + '"'),
        )
    )
    ps = draw(params.filter(lambda ps: all(k.lower() != "tag" for k, _ in ps)))
    if tag:
        ps = [("tag", draw(param_value)), *ps]
    text = f"{display + ' ' if display else ''}<{uri_text}>{_params_text(ps)}"
    return text, {"display": display, "uri": uri_text, "uri_fields": fields, "params": ps}


@st.composite
def vias(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]))
    h, p = draw(host), draw(port)
    branch = "z9hG4bK" + draw(st.text("abcXYZ09-.", min_size=1, max_size=12))
    ps = [("branch", branch)]
    if draw(st.booleans()):
        ps.append(("rport", None))
    if draw(st.booleans()):
        ps.append(("received", draw(ipv4)))
    text = f"SIP/2.0/{transport} {_hostport(h, p)}{_params_text(ps)}"
    return text, {"transport": transport, "host": h, "port": p, "params": ps}


_SPECIAL = {"via", "from", "to", "call-id", "cseq", "contact", "content-length", "max-forwards", "expires"}
extra_name = st.text("abcdefghXYZ-", min_size=2, max_size=12).filter(
    lambda n: n.lower() not in _SPECIAL and n.lower() not in headers.COMPACT and not n.startswith("-")
)
# printable values, no leading/trailing blank (the parser strips them), commas allowed (never split
# for unknown headers), non-ASCII and bytes that are not UTF-8 kept by surrogateescape
extra_value = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"), max_size=30
).map(str.strip)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    method = draw(st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE", "MESSAGE", "X-CUSTOM.1"]))
    ruri, ruri_fields = draw(sip_uris())
    via_list = draw(st.lists(vias(), min_size=1, max_size=3))
    frm, frm_fields = draw(name_addrs(tag=True))
    to, to_fields = draw(name_addrs(tag=False))
    call_id = draw(st.text("abcXYZ09-.!%*_+`'~()<>:\\\"/[]?{}@", min_size=1, max_size=20))
    cseq = draw(st.integers(0, 2**31 - 1))
    contacts = draw(st.lists(name_addrs(tag=False), max_size=2))
    body = draw(st.binary(max_size=40))
    fields: list[tuple[str, str]] = []
    combine_vias = draw(st.booleans())
    if combine_vias:
        fields.append((draw(st.sampled_from(["Via", "v"])), ", ".join(t for t, _ in via_list)))
    else:
        fields.extend((draw(st.sampled_from(["Via", "v"])), t) for t, _ in via_list)
    fields += [
        (draw(st.sampled_from(["From", "f"])), frm),
        (draw(st.sampled_from(["To", "t"])), to),
        (draw(st.sampled_from(["Call-ID", "i"])), call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
    ]
    fields += [(draw(st.sampled_from(["Contact", "m"])), t) for t, _ in contacts]
    extras = draw(st.lists(st.tuples(extra_name, extra_value), max_size=4))
    for name, value in extras:
        fields.insert(draw(st.integers(1, len(fields))), (name, value))
    fields.append(("Content-Length", str(len(body))))
    head = f"{method} {ruri} SIP/2.0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    data = head.encode("utf-8", "surrogateescape") + b"\r\n" + body
    model = {
        "method": method, "ruri": ruri, "ruri_fields": ruri_fields, "vias": [f for _, f in via_list],
        "from": frm_fields, "to": to_fields, "call_id": call_id, "cseq": (cseq, method),
        "contacts": [f for _, f in contacts], "body": body, "fields": fields,
    }  # fmt: skip
    return data, model


def _uri_matches(parsed: uri.Uri, fields: dict[str, object]) -> None:
    assert isinstance(parsed, uri.SipUri)
    assert (parsed.scheme, parsed.user, parsed.host, parsed.port, parsed.params) == (
        fields["scheme"], fields["user"], fields["host"], fields["port"], fields["params"],
    )  # fmt: skip


def _name_addr_matches(parsed: headers.NameAddr, fields: dict[str, object]) -> None:
    assert parsed.display == fields["display"]
    assert parsed.uri_text == fields["uri"]
    assert parsed.params == fields["params"]
    _uri_matches(parsed.uri, fields["uri_fields"])  # type: ignore[arg-type]


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(requests())
def test_a_generated_valid_request_round_trips(case: tuple[bytes, dict[str, object]]) -> None:
    data, model = case
    msg = parse(data)
    assert isinstance(msg, Request)
    validate_request(msg)
    assert (msg.method, msg.uri, msg.version, msg.body) == (
        model["method"],
        model["ruri"],
        "SIP/2.0",
        model["body"],
    )
    assert [(name, value) for name, value in msg.headers] == model["fields"]
    _uri_matches(msg.ruri, model["ruri_fields"])  # type: ignore[arg-type]
    parsed_vias = msg.vias
    assert len(parsed_vias) == len(model["vias"])  # type: ignore[arg-type]
    for via, fields in zip(parsed_vias, model["vias"], strict=True):  # type: ignore[call-overload]
        assert (via.transport, via.host, via.port, via.params) == (
            fields["transport"], fields["host"], fields["port"], fields["params"],
        )  # fmt: skip
    _name_addr_matches(msg.from_, model["from"])  # type: ignore[arg-type]
    _name_addr_matches(msg.to, model["to"])  # type: ignore[arg-type]
    assert (msg.call_id, msg.cseq) == (model["call_id"], model["cseq"])
    for contact, fields in zip(msg.contacts, model["contacts"], strict=True):  # type: ignore[call-overload]
        _name_addr_matches(contact, fields)
    assert msg.serialize() == data  # the bytes as received, while unmodified
    msg.invalidate()
    assert msg.serialize() == data  # rebuilt from the parsed fields: the same bytes
    again = parse(msg.serialize())
    validate_request(again)  # type: ignore[arg-type]
    assert list(again.headers) == list(msg.headers) and again.body == msg.body


@FAST
@given(requests(), st.integers(100, 699), st.text("abc XYZ-é", max_size=20).map(str.strip))
def test_a_response_to_it_round_trips(
    case: tuple[bytes, dict[str, object]], status: int, reason: str
) -> None:
    req = parse(case[0])
    assert isinstance(req, Request)
    resp = req.make_response(status, reason, to_tag="srv1")
    data = resp.serialize()
    back = parse(data)
    assert isinstance(back, Response)
    validate_response(back)
    assert (back.status, back.reason) == (status, reason)
    assert list(back.headers) == [*resp.headers, ("Content-Length", "0")]  # added by serialize
    assert back.cseq == req.cseq and back.call_id == req.call_id
    assert [str(v) for v in back.vias] == [str(v) for v in req.vias]
    if status > 100:
        assert back.to_tag == "srv1"


# ---- any bytes: parse or raise the one error type ------------------------------------------------

_SIGNIFICANT = [b" ", b"\t", b";", b"=", b":", b"<", b">", b'"', b"@", b",", b"\\", b"\r\n", b"\n", b"\r",
                b"\r\n ", b"\r\n\r\n", b"0", b"9", b"[", b"]", b"?", b"%", b"\x00", b"\x7f", b"\xc3\xa9",
                b"\xff", b"SIP/2.0", b"sip:", b"Content-Length: 9999\r\n", b"l: 0\r\n"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A generated valid request with up to four edits: SIP-significant bytes inserted or written
    over, spans cut, a header line repeated."""
    data, _ = draw(requests())
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "insert", "cut", "repeat-line", "random"]))
        if kind == "insert":
            data = data[:i] + draw(st.sampled_from(_SIGNIFICANT)) + data[i + draw(st.integers(0, 2)) :]
        elif kind == "cut":
            data = data[:i] + data[i + draw(st.integers(1, 40)) :]
        elif kind == "repeat-line":
            start = data.rfind(b"\r\n", 0, i) + 2
            end = data.find(b"\r\n", i)
            if end > start:
                data = data[:start] + data[start : end + 2] * 2 + data[end + 2 :]
        else:
            data = data[:i] + draw(st.binary(min_size=1, max_size=6)) + data[i:]
    return data


def exercise(data: bytes) -> tuple[str, object]:
    """What the server does with a datagram, through every accessor it may call; the outcome is
    ("ok", serialised) or ("error", status). Any exception but SipParseError escapes (a failure)."""
    try:
        msg = parse(data)
        if isinstance(msg, Response):
            validate_response(msg)
            msg.vias  # noqa: B018
            return "ok", msg.serialize()
        validate_request(msg)
        msg.vias, msg.max_forwards, msg.expires, msg.content_type  # noqa: B018
        msg.option_tags("supported"), msg.headers.get_all("route"), msg.headers.get_all("record-route")
        for contact in msg.contacts:
            contact.expires, contact.q, contact.star or contact.uri  # noqa: B018
        ruri = msg.ruri
        if isinstance(ruri, uri.SipUri):
            ruri.aor(), ruri.transport, ruri.user_unescaped, ruri.effective_port(), str(ruri)
        to_uri = msg.to.uri
        if isinstance(to_uri, uri.SipUri):
            to_uri.aor()
        stamp_via(msg.top_via, ("192.0.2.1", 5060))
        msg.make_response(401, to_tag="t").serialize()
        msg.invalidate()
        return "ok", msg.serialize()
    except SipParseError as exc:
        if exc.status is not None:
            resp = error_response(data, exc.status, exc.reason, "t")  # must never raise
            if resp is not None:
                resp.serialize()
        return "error", exc.status


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(), st.binary(max_size=300)))
def test_any_bytes_parse_or_raise_the_one_error_type(data: bytes) -> None:
    exercise(data)


def _with_one_content_length(msg: Request | Response) -> list[tuple[str, str]]:
    """The header fields serialising should write: the first Content-Length (stating the body's
    length, added at the end when absent), every other field as parsed."""
    out, seen = [], False
    for key, name, value in msg.headers.entries:
        if key == "content-length":
            if seen:
                continue
            seen, value = True, str(len(msg.body))
        out.append((name, value))
    return out if seen else [*out, ("Content-Length", str(len(msg.body)))]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_serialising_what_parsed_is_a_fixed_point(data: bytes) -> None:
    """parse → serialise normalises once (one Content-Length, folded lines joined, blanks trimmed):
    the result reparses to the same message, serialises to the same bytes, and gets the same
    accept/reject decision as the bytes it came from."""
    try:
        first = parse(data)
    except SipParseError:
        return
    first.invalidate()
    once = first.serialize()
    second = parse(once)
    assert type(second) is type(first)
    assert second.start_line() == first.start_line()
    assert list(second.headers) == _with_one_content_length(first) and second.body == first.body
    second.invalidate()
    assert second.serialize() == once
    assert exercise(data)[0] == exercise(once)[0], (data, once)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(mutated(), st.sampled_from([b"\r\n\r\n", b"\r\n"])), min_size=1, max_size=4),
    st.lists(st.integers(1, 200), min_size=1, max_size=30),
    st.integers(200, 4000),
)
def test_framing_any_stream_in_any_split_gives_the_same_messages(
    pieces: list[bytes], sizes: list[int], max_size: int
) -> None:
    stream = b"".join(pieces)

    def run(chunks: list[bytes]) -> tuple[list[bytes], int, bool]:
        framer = StreamFramer(max_size)
        out = [item for chunk in chunks for item in framer.feed(chunk)]
        messages = [m for m in out if isinstance(m, bytes)]
        failed = [m for m in out if isinstance(m, FramingFailed)]
        assert len(failed) <= 1 and all(len(m) <= max_size for m in messages)
        for m in messages:  # a framed message goes to the parser with stream=True
            try:
                parse(m, stream=True)
            except SipParseError:
                pass
        return messages, sum(isinstance(m, PingReceived) for m in out), bool(failed)

    chunks, pos, i = [], 0, 0
    while pos < len(stream):
        chunks.append(stream[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    whole = run([stream])
    split = run(chunks)
    if not whole[2] and not split[2]:
        assert split == whole
    else:  # failing is reached either way; what came out before it agrees
        assert split[2] == whole[2]
        n = min(len(split[0]), len(whole[0]))
        assert split[0][:n] == whole[0][:n]


def test_a_folded_value_is_its_pieces_joined_by_one_space() -> None:
    """Regression (fuzzing, issue 20): each continuation line used to be appended to the value,
    copying it again: 16,000 continuation lines (64 KB) cost ~25 times 2,000 lines' time."""
    lines = ["", "  b", "\t", "c  ", " ", "d"]
    data = (
        "OPTIONS sip:h SIP/2.0\r\nX-A:  a \r\n"
        + "".join(f" {p}\r\n" if p else " \r\n" for p in lines)
        + "\r\n"
    ).encode()
    assert parse(data).headers.get("x-a") == "a b c d"
    assert parse(b"OPTIONS sip:h SIP/2.0\r\nX-A:\r\n \r\n x\r\n\r\n").headers.get("x-a") == "x"


# ---- linear time ---------------------------------------------------------------------------------

HEAD = (
    "OPTIONS sip:a@b.example SIP/2.0\r\nVia: SIP/2.0/UDP h.example;branch=z9hG4bK1\r\n"
    "From: <sip:a@b.example>;tag=1\r\nTo: <sip:a@b.example>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
)

# Each family repeats one piece n times where a parser could go quadratic: folded lines, list
# splitting with quotes and angle brackets, parameters, URIs, hosts, many headers.
FAMILIES: dict[str, Callable[[int], str]] = {
    "folded-lines": lambda n: HEAD + "X-A: a\r\n" + (" " + "b" * 30 + "\r\n") * n,
    "many-headers": lambda n: HEAD + "X-A: b\r\n" * n,
    "many-vias": lambda n: HEAD + "Via: SIP/2.0/UDP h;branch=z9hG4bK2\r\n" * n,
    "combined-vias": lambda n: HEAD.replace("branch=z9hG4bK1", "branch=z9hG4bK1" + ", SIP/2.0/UDP h" * n),
    "commas-after-angles": lambda n: HEAD + "Contact: <>" + "," * n + "\r\n",
    "open-angles": lambda n: HEAD + "Contact: <sip:a@b>" + ",<" * n + "\r\n",
    "quoted-commas": lambda n: HEAD + 'Contact: "' + "a," * n + '" <sip:a@b>\r\n',
    "escapes": lambda n: HEAD + "Contact: " + '"\\' * n + "\r\n",
    "params": lambda n: HEAD.replace("tag=1", "tag=1" + ";a" * n),
    "quoted-params": lambda n: HEAD.replace("tag=1", 'tag="1"' + ';a="x"' * n),
    "uri-ats": lambda n: HEAD.replace("OPTIONS sip:a@b.example", "OPTIONS sip:" + "a@" * n + "b"),
    "uri-params": lambda n: HEAD.replace("OPTIONS sip:a@b.example", "OPTIONS sip:b" + ";a" * n + "?"),
    "host-dashes": lambda n: HEAD.replace("UDP h.example;", "UDP h" + "-" * n + "-;"),
    "display-words": lambda n: HEAD.replace("From: <sip:a@b.example>", "From: " + "a " * n + "<sip:a@b>"),
    "leading-crlfs": lambda n: "\r\n" * n + HEAD,
    "bare-lf": lambda n: (HEAD + "X: y\r\n" * n + "\r\n").replace("\r\n", "\n"),
    "unterminated": lambda n: HEAD + "X: " + "a" * n,
}


def _fresh() -> None:
    """Forget what the parser memoises, so every measured parse does the whole work."""
    for cached in (
        uri.parse_uri,
        headers._parse_name_addr,
        headers.parse_cseq,
        grammar.is_token,
        grammar.is_host,
    ):
        cached.cache_clear()


def _bytes_of(family: Callable[[int], str], n: int) -> bytes:
    return (family(n) + "\r\n").encode()  # the empty line that ends the head


def _bytecodes(data: bytes) -> int:
    """Python bytecodes executed by `exercise(data)`: an exact count, the same on any machine."""
    count = 0

    def local(frame, event, arg):  # type: ignore[no-untyped-def]
        nonlocal count
        if event == "opcode":
            count += 1
        return local

    def calls(frame, event, arg):  # type: ignore[no-untyped-def]
        frame.f_trace_opcodes = True
        return local

    _fresh()
    sys.settrace(calls)
    try:
        exercise(data)
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_python_work_grows_linearly(name: str) -> None:
    family = FAMILIES[name]
    small, large = _bytecodes(_bytes_of(family, 300)), _bytecodes(_bytes_of(family, 2400))
    # 8 times the pieces: at most 8 times the work plus the fixed cost of one message
    assert large <= 8 * small + 20_000, (name, small, large)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.floats(0, 1), st.sampled_from([*_SIGNIFICANT, b"a", b"a=b", b"<sip:a@b>", b";x"]))
def test_python_work_grows_linearly_for_any_repeated_piece(
    case: tuple[bytes, dict[str, object]], where: float, piece: bytes
) -> None:
    data = case[0]
    head_end = data.find(b"\r\n\r\n")
    i = int(where * head_end)
    assume(i > 0)
    small = _bytecodes(data[:i] + piece * 40 + data[i:])
    large = _bytecodes(data[:i] + piece * 320 + data[i:])
    assert large <= 8 * small + 20_000, (data[:i], piece, small, large)


def _cpu_seconds(data: bytes) -> float:
    """The parser's own CPU time: the cyclic collector is held off, since its passes cost what the
    whole test process holds (thousands of tests' objects in the full suite), not what the parse does."""
    _fresh()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(3):
            exercise(data)
        return time.process_time() - start
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_parse_time_grows_linearly(name: str) -> None:
    """C-level work (string copies, regex backtracking) escapes the bytecode count: compare the CPU
    time of 8n repetitions with n's, sizes up to the 64 KB a datagram or framed message can have.
    Relative, interleaved, best of 7, and retried: a loaded machine slows both sizes alike; linear
    parsing gives ~8, quadratic ~64 at these sizes, and the bound is 24."""
    family = FAMILIES[name]
    small_data, large_data = _bytes_of(family, 1000), _bytes_of(family, 8000)
    ratios = []
    for _ in range(3):
        small = large = float("inf")
        for _ in range(7):
            small = min(small, _cpu_seconds(small_data))
            large = min(large, _cpu_seconds(large_data))
        ratios.append(large / max(small, 1e-6))
        if ratios[-1] <= 24:
            return
    pytest.fail(f"{name}: 8x the input took {min(ratios):.1f}x the time (tries: {ratios})")
