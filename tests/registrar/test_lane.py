"""The REGISTER lane against the general path: same messages, same answers, same bindings.

Two complete applications are built from one configuration: one with the lane (as served), one with
it switched off (every REGISTER through the parser, validation, a server transaction and
SipServer.reply). Both see the same messages at the same fixed time with the same nonce randomness;
every answer (bytes and destination), the bindings and the registrar counters must be identical.
The messages are drawn from the spellings phones send and from ones the lane must leave to the
general path (folded lines, bodies, several contacts, quoted parameters, odd Vias...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.bench_sip_cpu import Capture
from registrar import lane
from server import metrics
from server.app import Application
from server.registrar_service import AUTH_FAILURES, REGISTER_OUTCOMES
from sipcore.digest import _SALT_LEN
from sipcore.flow import Flow
from sipcore.randomness import BlockSource

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_790_000_000.0
REALM = "demo.sipcore.test"
PASSWORDS = {"1001": "demo1001pw", "1002": "demo1002pw", "1003": "demo1003pw"}


def _yaml(guard: bool) -> str:
    text = (ROOT / "config" / "example.yaml").read_text()
    text = text.replace("  metrics: 127.0.0.1:9090", "  metrics: null")
    text = text.replace("  log: {format: auto, level: info}", "  log: {format: auto, level: warning}")
    if not guard:
        text = text.replace(
            "  guard:\n    failure_threshold: 10", "  guard:\n    enabled: false\n    failure_threshold: 10"
        )
    return text


class Side:
    """One application, its UDP socket replaced by a capture, TCP writes captured too."""

    def __init__(self, app: Application, use_lane: bool, lane_handler: str = "register_lane") -> None:
        self.app = app
        sip = app.sip
        self.ep = sip.transports.udp[0]
        self.cap = Capture(self.ep.local)
        self.ep.transport.close()  # type: ignore[union-attr]
        self.ep.transport = self.cap  # type: ignore[assignment]
        self.tcp: list[tuple[bytes, str | None]] = []
        sip.transports.send_flow = self._send_flow  # type: ignore[method-assign]
        if not use_lane:
            sip.handlers = dataclasses.replace(sip.handlers, **{lane_handler: None})
        registrar = app.registrar.registrar
        registrar.rng = random.Random(7)  # the expiry jitter draws the same numbers on both sides
        registrar.challenger._salts = BlockSource(  # type: ignore[attr-defined]  # same salts on both sides
            _SALT_LEN, 512, lambda n: bytes(i % 256 for i in range(n))
        )
        self.taken = 0
        if use_lane:
            real = getattr(sip.handlers, lane_handler)

            def counting(data: bytes, flow: Flow) -> bool:
                took = real(data, flow)
                self.taken += took
                return took

            sip.handlers = dataclasses.replace(sip.handlers, **{lane_handler: counting})

    def _send_flow(self, data: bytes, flow: Flow) -> bool:
        if flow.transport == "udp":
            self.cap.sendto(data, flow.remote)
        else:
            self.tcp.append((data, flow.conn_id))
        return True

    def send(self, data: bytes, flow: Flow) -> list[tuple[bytes, Any]]:
        self.cap.sent.clear()
        self.tcp.clear()
        self.app.sip.on_message(data, flow)
        self.app.sip.transports.flush_udp()
        return [*self.cap.sent, *self.tcp]

    def bindings(self) -> dict[str, tuple[Any, ...]]:
        store = self.app.registrar.store
        return {aor: rec.bindings for aor, rec in store._aors.items()}


class Pair:
    def __init__(self, lane_side: Side, general: Side) -> None:
        self.lane, self.general = lane_side, general
        # messages are addressed to the lane side's port: the general side answers for it too
        general.app.sip.local_ports |= lane_side.app.sip.local_ports

    @property
    def local(self) -> tuple[str, int]:
        return self.lane.ep.local

    def send(self, data: bytes, flow: Flow) -> list[tuple[bytes, Any]]:
        before = _counters()
        got = self.lane.send(data, flow)
        middle = _counters()
        want = self.general.send(data, flow)
        after = _counters()
        assert got == want, f"lane and general path answer differently to\n{data.decode(errors='replace')}"
        assert _delta(before, middle) == _delta(middle, after), data
        assert "parse ('internal_error',)" not in _delta(before, after), data  # nothing crashed
        return got

    def check_bindings(self) -> None:
        assert self.lane.bindings() == self.general.bindings()


def _counters() -> dict[str, int]:
    out = {f"register {k}": c.value for k, c in REGISTER_OUTCOMES._cells.items()}
    out |= {f"auth {k}": c.value for k, c in AUTH_FAILURES._cells.items()}
    out |= {f"sent {k}": c.value for k, c in metrics.RESPONSES_SENT._cells.items()}
    out |= {f"requests {k}": c.value for k, c in metrics.REQUESTS._cells.items()}
    out |= {f"parse {k}": c.value for k, c in metrics.PARSE_ERRORS._cells.items()}
    out |= {f"dropped {k}": c.value for k, c in metrics.DROPPED._cells.items()}
    return out


def _delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: v - a.get(k, 0) for k, v in b.items() if v != a.get(k, 0)}


async def _side(tmp: Path, guard: bool, use_lane: bool, lane_handler: str = "register_lane") -> Side:
    from server.app import load_application_config

    tmp.mkdir(parents=True, exist_ok=True)
    text = _yaml(guard).replace("  state_dir: var", f"  state_dir: {tmp / 'var'}")
    text = text.replace("carrier: rates/example.csv", f"carrier: {ROOT / 'config' / 'rates' / 'example.csv'}")
    path = tmp / "config.yaml"
    path.write_text(text)
    loaded = load_application_config(str(path))
    sip = loaded.settings.sip
    sip.udp, sip.tcp, sip.metrics_address = ["127.0.0.1:0"], ["127.0.0.1:0"], None
    app = Application(loaded)
    await app.start()
    return Side(app, use_lane, lane_handler)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _pair(loop: asyncio.AbstractEventLoop, tmp: Path, guard: bool) -> Pair:
    return Pair(
        loop.run_until_complete(_side(tmp / "lane", guard, True)),
        loop.run_until_complete(_side(tmp / "general", guard, False)),
    )


@pytest.fixture(scope="module")
def pair(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = _pair(loop, tmp_path_factory.mktemp("lane"), guard=False)
    yield p
    for side in (p.lane, p.general):
        loop.run_until_complete(side.app.close())


@pytest.fixture(autouse=True)
def fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)


# ---- messages -----------------------------------------------------------------------------------
_SEQ = iter(range(10**9))


def _nonce(answer: bytes) -> str | None:
    m = re.search(rb'WWW-Authenticate: Digest realm="[^"]*", nonce="([^"]+)", algorithm=MD5', answer)
    return m.group(1).decode() if m else None


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def authorization(
    user: str, password: str, nonce: str, uri: str, nc: str = "00000001", realm: str = REALM
) -> str:
    ha1, ha2 = _md5(f"{user}:{realm}:{password}"), _md5(f"REGISTER:{uri}")
    response = _md5(f"{ha1}:{nonce}:{nc}:0a4f113b:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc={nc}'
    )


class Shape:
    """One REGISTER spelling: which names, which values, what else."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


VIAS = [
    "plain",
    "plain",
    "rport",
    "received",
    "other-host",
    "noport",
    "lower",
    "nocookie",
    "maddr",
    "two",
    "spaces",
]
CONTACTS = [
    "plain", "plain", "expires0", "expires30", "expires_big", "q", "badq", "instance", "instance-quoted", "regid",
    "star", "two", "addrspec", "display", "badexp",
]  # fmt: skip
EXTRAS = [
    "User-Agent: Yealink SIP-T46U 66.86.0.15", "Max-Forwards: 70", "Max-Forwards: x", "Allow: INVITE, ACK, BYE",
    "Supported: path, outbound", "Require: foo", "Path: <sip:e@x;lr>", "Content-Length: 0", "Content-Length: 3",
    "X-Custom: a:b", " folded", "Route: <sip:x;lr>", "User-Agent: friendly-scanner", "Expires: 60",
]  # fmt: skip

_shapes = st.builds(
    Shape,
    user=st.sampled_from(["1001", "1002", "1003", "9999", "1001%30", "100"]),
    password_ok=st.sampled_from([True, True, True, False]),
    names=st.sampled_from(["full", "compact", "lower", "spaced"]),
    ruri=st.sampled_from(
        ["ip", "ip", "domain", "ip-noport", "user", "sips", "params"]
    ),  # not "other": proxied
    to_host=st.sampled_from(["same", "same", "domain", "other"]),
    to_extra=st.sampled_from(["", "", "", ";tag=x1", ' "Alice" ', "Alice "]),
    from_display=st.sampled_from(["", "", '"Alice Martin" ', "Alice ", '"a\\"b" ']),
    via=st.sampled_from(VIAS),
    contact=st.sampled_from(CONTACTS),
    expires=st.sampled_from(["3600", "3600", "3600", None, "0", "30", "x", "99999"]),
    extras=st.lists(st.sampled_from(EXTRAS), max_size=3),
    transport=st.sampled_from(["udp", "udp", "udp", "tcp", "tls"]),
    retransmit=st.booleans(),
    refresh=st.booleans(),
)


def via_text(kind: str, tp: str, ip: str, port: int, branch: str) -> str:
    """A top Via in one of the VIAS spellings, from ``ip``:``port``; ``branch`` without its cookie."""
    return {
        "plain": f"SIP/2.0/{tp} {ip}:{port};branch=z9hG4bK{branch}",
        "rport": f"SIP/2.0/{tp} {ip}:{port};branch=z9hG4bK{branch};rport",
        "received": f"SIP/2.0/{tp} {ip}:{port};received={ip};branch=z9hG4bK{branch}",
        "other-host": f"SIP/2.0/{tp} 10.0.0.7:{port};rport;branch=z9hG4bK{branch}",
        "noport": f"SIP/2.0/{tp} {ip};branch=z9hG4bK{branch}",
        "lower": f"SIP/2.0/{tp.lower()} phone.lan:{port};branch=z9hG4bK{branch}",
        "nocookie": f"SIP/2.0/{tp} {ip}:{port};branch=abc{branch}",
        "maddr": f"SIP/2.0/{tp} {ip}:{port};branch=z9hG4bK{branch};maddr={ip}",
        "two": f"SIP/2.0/{tp} {ip}:{port};branch=z9hG4bK{branch}, SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKz",
        "spaces": f"SIP/2.0/{tp} {ip} : {port} ;branch=z9hG4bK{branch}",
    }[kind]


def build(shape: Shape, local: tuple[str, int], n: int, cseq: int, auth: str | None, src_port: int) -> bytes:
    host, port = local
    ruri = {
        "ip": f"sip:{host}:{port}", "domain": f"sip:{REALM}", "ip-noport": f"sip:{host}",
        "other": "sip:elsewhere.example", "user": f"sip:x@{host}:{port}", "sips": f"sips:{host}:{port}",
        "params": f"sip:{host}:{port};transport=udp",
    }[shape.ruri]  # fmt: skip
    to_hostport = {
        "same": ruri.split(":", 1)[1].split(";")[0].split("@")[-1],
        "domain": REALM,
        "other": "x.example",
    }[shape.to_host]
    via = via_text(shape.via, shape.transport.upper(), "127.0.0.1", src_port, f"{n}x{cseq}")
    uri = f"sip:{shape.user}@127.0.0.1:{src_port}"
    contact = {
        "plain": f"<{uri}>", "expires0": f"<{uri}>;expires=0", "expires30": f"<{uri}>;expires=30",
        "expires_big": f"<{uri}>;expires=999999", "q": f"<{uri}>;q=0.5", "badq": f"<{uri}>;q=2",
        "instance": f"<{uri}>;+sip.instance=<urn:uuid:00000000-0000-1000-8000-{n:012d}>",
        "instance-quoted": f'<{uri}>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-{n:012d}>";reg-id=1',
        "regid": f"<{uri};transport=tcp>;reg-id=1;+sip.instance=<urn:uuid:1>", "star": "*",
        "two": f"<{uri}>, <sip:{shape.user}@192.0.2.1>", "addrspec": uri, "display": f'"Phone" <{uri}>',
        "badexp": f"<{uri}>;expires=soon",
    }[shape.contact]  # fmt: skip
    n_via, n_from, n_to, n_cid, n_contact = {
        "full": ("Via", "From", "To", "Call-ID", "Contact"),
        "compact": ("v", "f", "t", "i", "m"),
        "lower": ("via", "from", "to", "call-id", "contact"),
        "spaced": ("Via ", "From", "To", "Call-ID ", "Contact"),
    }[shape.names]
    lines = [
        f"REGISTER {ruri} SIP/2.0",
        f"{n_via}: {via}",
        f"{n_from}: {shape.from_display}<sip:{shape.user}@{REALM}>;tag=f{n}",
        f"{n_to}:{shape.to_extra.rstrip() if shape.to_extra.startswith(';') else ''} "
        f"{shape.to_extra if not shape.to_extra.startswith(';') else ''}<sip:{shape.user}@{to_hostport}>"
        f"{shape.to_extra if shape.to_extra.startswith(';') else ''}",
        f"{n_cid}: lane-{n}@127.0.0.1",
        f"CSeq: {cseq} REGISTER",
        f"{n_contact}: {contact}",
    ]
    if shape.expires is not None:
        lines.append(f"Expires: {shape.expires}")
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    lines += shape.extras
    body = "abc" if "Content-Length: 3" in shape.extras else ""
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def _flow(shape: Shape, local: tuple[str, int], src_port: int, n: int) -> Flow:
    if shape.transport in ("tcp", "tls"):
        return Flow(shape.transport, ("127.0.0.1", src_port), local, f"tcp-lane-{n}")
    return Flow("udp", ("127.0.0.1", src_port), local)


def run(pair: Pair, shape: Shape) -> None:
    n = next(_SEQ)
    src_port = 20000 + n % 40000
    local = pair.local
    flow = _flow(shape, local, src_port, n)
    first = build(shape, local, n, 1, None, src_port)
    answers = pair.send(first, flow)
    if shape.retransmit:
        pair.send(first, flow)
    nonce = next((x for x in (_nonce(a[0]) for a in answers) if x), None)
    if nonce is None:
        return
    uri = first.split(b" ", 2)[1].decode()
    password = PASSWORDS.get(shape.user.replace("%30", "0"), "nope") if shape.password_ok else "wrong"
    second = build(shape, local, n, 2, authorization(shape.user, password, nonce, uri), src_port)
    pair.send(second, flow)
    if shape.retransmit:
        pair.send(second, flow)
    if shape.refresh:
        pair.send(
            build(shape, local, n, 3, authorization(shape.user, password, nonce, uri, "00000002"), src_port),
            flow,
        )
        pair.send(
            build(shape, local, n, 3, authorization(shape.user, password, nonce, uri, "00000003"), src_port),
            flow,
        )
    pair.check_bindings()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=_shapes)
def test_the_lane_answers_as_the_general_path(pair: Pair, shape: Shape) -> None:
    run(pair, shape)


_lane_shapes = st.builds(
    Shape,
    user=st.sampled_from(["1001", "1002", "1003", "9999", "1001%30"]),
    password_ok=st.sampled_from([True, True, False]),
    names=st.sampled_from(["full", "compact", "lower", "spaced"]),
    ruri=st.sampled_from(["ip", "domain", "ip-noport"]),
    to_host=st.sampled_from(["same", "same", "domain", "other"]),
    to_extra=st.sampled_from(["", ' "Alice" ', "Alice "]),
    from_display=st.sampled_from(["", '"Alice Martin" ', "Alice "]),
    via=st.sampled_from(["plain", "rport", "received", "other-host", "noport", "lower"]),
    contact=st.sampled_from(["plain", "expires0", "expires30", "expires_big", "q", "instance", "regid", "display"]),
    expires=st.sampled_from(["3600", None, "0", "30", "99999"]),
    extras=st.tuples(
        st.sampled_from(["", "User-Agent: Yealink SIP-T46U 66.86.0.15", "User-Agent: Linphone/5.2"]),
        st.sampled_from(["", "Allow: INVITE, ACK, BYE", "Supported: path, outbound", "X-Custom: a:b"]),
        st.sampled_from(["", "Max-Forwards: 70", "Content-Length: 0"]),
    ).map(lambda extras: [e for e in extras if e]),
    transport=st.sampled_from(["udp", "udp", "tcp", "tls"]),
    retransmit=st.booleans(),
    refresh=st.booleans(),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=_lane_shapes)
def test_the_lane_answers_as_the_general_path_on_what_it_takes(pair: Pair, shape: Shape) -> None:
    """The same comparison on shapes the lane reads (varied: names, Vias, parameters, failures)."""
    taken, requests = pair.lane.taken, metrics.REQUESTS.value("REGISTER")
    run(pair, shape)
    # both sides count their requests: half of them were the lane side's, and all of those took the lane
    assert 2 * (pair.lane.taken - taken) == metrics.REQUESTS.value("REGISTER") - requests


def test_the_lane_takes_what_phones_send(pair: Pair) -> None:
    """The lane is not vacuous: the shapes phones and SIPp send go through it."""
    base = dict(
        user="1001", password_ok=True, names="full", ruri="ip", to_host="same", to_extra="", from_display="",
        via="plain", contact="plain", expires="3600", extras=[], transport="udp", retransmit=False, refresh=False,
    )  # fmt: skip
    cases = [
        {}, {"via": "rport"}, {"names": "compact"}, {"from_display": '"Alice Martin" '}, {"contact": "q"},
        {"contact": "expires0"}, {"transport": "tcp"}, {"transport": "tls"}, {"extras": ["User-Agent: Yealink", "Max-Forwards: 70"]},
        {"ruri": "domain", "to_host": "domain"}, {"contact": "instance"}, {"via": "other-host"},
    ]  # fmt: skip
    for change in cases:
        taken = pair.lane.taken
        run(pair, Shape(**{**base, **change}))
        assert pair.lane.taken - taken >= 2, change  # the challenge and the registration


def test_the_lane_leaves_unusual_requests_alone(pair: Pair) -> None:
    base = dict(
        user="1001", password_ok=True, names="full", ruri="ip", to_host="same", to_extra="", from_display="",
        via="plain", contact="plain", expires="3600", extras=[], transport="udp", retransmit=False, refresh=False,
    )  # fmt: skip
    for change in [{"contact": "two"}, {"contact": "star"}, {"via": "two"}, {"extras": [" folded"]},
                   {"extras": ["Path: <sip:e@x;lr>"]}, {"contact": "instance-quoted"}, {"to_extra": ";tag=x1"},
                   {"extras": ["Content-Length: 3"]}, {"via": "nocookie"}]:  # fmt: skip
        taken = pair.lane.taken
        run(pair, Shape(**{**base, **change}))
        assert pair.lane.taken == taken, change


@pytest.mark.parametrize("field", [b'username="1001"', b'uri="sip:'])
def test_credentials_with_bytes_that_are_not_utf8_get_a_400_on_both_paths(pair: Pair, field: bytes) -> None:
    """A genuine nonce and a username or digest uri holding a byte that is not UTF-8: 400 on the
    lane and on the general path alike, nothing raised (it once escaped digest verification)."""
    shape = Shape(
        user="1001", password_ok=True, names="full", ruri="ip", to_host="same", to_extra="", from_display="",
        via="plain", contact="plain", expires="3600", extras=[], transport="udp", retransmit=False, refresh=False,
    )  # fmt: skip
    n = next(_SEQ)
    src_port = 20000 + n % 40000
    flow = _flow(shape, pair.local, src_port, n)
    first = build(shape, pair.local, n, 1, None, src_port)
    nonce = next(x for x in (_nonce(a[0]) for a in pair.send(first, flow)) if x)
    uri = first.split(b" ", 2)[1].decode()
    second = build(shape, pair.local, n, 2, authorization("1001", PASSWORDS["1001"], nonce, uri), src_port)
    assert field in second
    answers = pair.send(second.replace(field, field[:-2] + b"\xff" + field[-2:], 1), flow)
    assert [a[0][:12] for a in answers] == [b"SIP/2.0 400 "]


def test_retransmissions_get_the_kept_answer(pair: Pair) -> None:
    shape = Shape(
        user="1002", password_ok=True, names="full", ruri="ip", to_host="same", to_extra="", from_display="",
        via="plain", contact="plain", expires="3600", extras=[], transport="udp", retransmit=True, refresh=False,
    )  # fmt: skip
    run(pair, shape)
    assert pair.lane.app.registrar._answers  # answers kept for timer J


def test_guard_decisions_match(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """Bans and scanner refusals through the lane, as through the general path."""
    p = _pair(loop, tmp_path, guard=True)
    try:
        base = dict(
            user="1003", password_ok=False, names="full", ruri="ip", to_host="same", to_extra="", from_display="",
            via="plain", contact="plain", expires="3600", extras=[], transport="udp", retransmit=False,
            refresh=False,
        )  # fmt: skip
        for _ in range(12):  # past the failure threshold: banned, then dropped
            run(p, Shape(**base))
        run(p, Shape(**{**base, "extras": ["User-Agent: friendly-scanner"]}))
        assert p.lane.taken > 0
    finally:
        for side in (p.lane, p.general):
            loop.run_until_complete(side.app.close())


def test_read_refuses_a_body_and_folding() -> None:
    head = b"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
    assert lane.read(head + b"\r\nbody", ("127.0.0.1", 5060)) is None
    assert lane.read(head + b" folded\r\n\r\n", ("127.0.0.1", 5060)) is None
