"""The INVITE lane against the general path: same INVITEs and ACKs, same answers, same counters.

Two complete applications are built from one configuration (tests/registrar/test_lane.py's harness):
one with the INVITE lane (as served), one with it switched off, so that every INVITE without
credentials goes through the parser, validation, the SIP server's stateless dispatch, the proxy
service and the call controller. Both see the same messages at the same fixed time with the same
nonce randomness; every answer (bytes and destination) and the counters (requests, responses,
drops, parse errors, authentication failures) must be identical. The messages are drawn from the
spellings phones and SIPp send and from ones the lane must leave to the general path.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registrar import invite_lane
from server import metrics
from sipcore.digest import build_authorization
from sipcore.flow import Flow
from tests.registrar.test_lane import PASSWORDS, REALM, VIAS, Pair, Shape, _side, via_text
from tests.registrar.test_lane import fixed_time as fixed_time
from tests.registrar.test_lane import loop as loop

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
_SEQ = iter(range(10**9))


def _pair(loop: asyncio.AbstractEventLoop, tmp: Path) -> Pair:
    return Pair(
        loop.run_until_complete(_side(tmp / "lane", True, True, "invite_lane")),
        loop.run_until_complete(_side(tmp / "general", True, False, "invite_lane")),
    )


@pytest.fixture(scope="module")
def pair(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = _pair(loop, tmp_path_factory.mktemp("invite_lane"))
    yield p
    for side in (p.lane, p.general):
        loop.run_until_complete(side.app.close())


EXTRAS = [
    "User-Agent: Yealink SIP-T46U 66.86.0.15", "User-Agent: friendly-scanner", "Max-Forwards: 70",
    "Max-Forwards: 0", "Max-Forwards: 300", "Max-Forwards: x", "Allow: INVITE, ACK, BYE, CANCEL",
    "Supported: replaces, timer", "Proxy-Require: foo", "Route: <sip:127.0.0.1;lr>", "Expires: 60",
    "Proxy-Authorization: Digest garbage", " folded", "Record-Route: <sip:10.0.0.9;lr>", "X-Custom: a:b",
    "Content-Type: application/sdp", "Content-Type: text/plain", "Call-ID: other",
]  # fmt: skip

_shapes = st.builds(
    Shape,
    user=st.sampled_from(["1001", "1002", "9999"]),
    from_host=st.sampled_from(["realm", "realm", "local", "other"]),
    names=st.sampled_from(["full", "compact", "lower", "spaced"]),
    ruri=st.sampled_from(["realm", "realm", "local", "phone", "other", "sips", "tel", "headers", "noscheme"]),
    to=st.sampled_from(["plain", "plain", "display", "tag", "addrspec", "param"]),
    from_display=st.sampled_from(["", "", '"Alice Martin" ', "Alice ", '"a\\"b" ']),
    from_params=st.sampled_from([";tag=f1", ";tag=f1", ";tag=f1;x=y", "", ";tag=a=b"]),
    via=st.sampled_from(VIAS),
    extras=st.lists(st.sampled_from(EXTRAS), max_size=3),
    body=st.sampled_from(["sdp", "sdp", "none", "short", "long", "nolength"]),
    transport=st.sampled_from(["udp", "udp", "udp", "tcp", "tls", "ws"]),
    source=st.sampled_from(["phone", "phone", "phone", "trunk"]),
    cseq=st.sampled_from(["1 INVITE", "1 INVITE", "2 INVITE", "1 ACK", "x INVITE", "99999999999 INVITE"]),
    retransmit=st.booleans(),
    ack=st.sampled_from(["right", "right", "wrong-tag", "no-cl"]),
)

_BASE = dict(
    user="1001", from_host="realm", names="full", ruri="realm", to="plain", from_display="", from_params=";tag=f1",
    via="plain", extras=[], body="sdp", transport="udp", source="phone", cseq="1 INVITE", retransmit=False,
    ack="right",
)  # fmt: skip


def build(shape: Shape, local: tuple[str, int], n: int, src: tuple[str, int]) -> bytes:
    host, port = local
    ruri = {
        "realm": f"sip:1002@{REALM}",
        "local": f"sip:1002@{host}:{port}",
        "phone": f"sip:+4930123@{REALM};user=phone",
        "other": "sip:1002@elsewhere.example",
        "sips": f"sips:1002@{REALM}",
        "tel": "tel:+4930123",
        "headers": f"sip:1002@{REALM}?subject=x",
        "noscheme": "1002",
    }[shape.ruri if shape.to != "tag" else "realm"]  # fmt: skip  (in dialog, elsewhere: a DNS lookup)
    from_host = {"realm": REALM, "local": f"{host}:{port}", "other": "other.example"}[shape.from_host]
    to_uri = f"sip:1002@{REALM}"
    to = {
        "plain": f"<{to_uri}>", "display": f'"Bob" <{to_uri}>', "tag": f"<{to_uri}>;tag=t{n}",
        "addrspec": to_uri, "param": f"<{to_uri}>;x=y",
    }[shape.to]  # fmt: skip
    ip, sport = src
    via = via_text(shape.via, shape.transport.upper(), ip, sport, f"i{n}")
    n_via, n_from, n_to, n_cid = {
        "full": ("Via", "From", "To", "Call-ID"),
        "compact": ("v", "f", "t", "i"),
        "lower": ("via", "from", "to", "call-id"),
        "spaced": ("Via ", "From", "To", "Call-ID "),
    }[shape.names]
    body = {"sdp": SDP, "none": "", "short": SDP, "long": SDP, "nolength": SDP}[shape.body]
    length = {"sdp": len(SDP), "none": 0, "short": len(SDP) + 9, "long": len(SDP) - 9, "nolength": None}[
        shape.body
    ]
    method = shape.cseq.split()[-1] if shape.cseq.endswith("INVITE") else "INVITE"
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"{n_via}: {via}",
        f"{n_from}: {shape.from_display}<sip:{shape.user}@{from_host}>{shape.from_params}",
        f"{n_to}: {to}",
        f"{n_cid}: il-{n}@10.9.8.7",
        f"CSeq: {shape.cseq}",
        f"Contact: <sip:{shape.user}@{ip}:{sport}>",
        *shape.extras,
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def ack_of(invite: bytes, answer: bytes, shape: Shape) -> bytes:
    """The ACK a phone sends for a non-2xx answer (§17.1.1.3): the INVITE's Request-URI, top Via,
    From and Call-ID, the answer's To, CSeq number with ACK."""
    head = invite.split(b"\r\n\r\n")[0].decode().split("\r\n")
    keep = [
        ln for ln in head[1:] if ln.split(":")[0].strip().lower() in ("via", "v", "from", "f", "call-id", "i")
    ]
    to = re.search(rb"\r\n(?:to|t) *: *([^\r\n]*)", answer, re.IGNORECASE)
    assert to is not None
    to_value = to.group(1).decode()
    if shape.ack == "wrong-tag":
        to_value = re.sub(r"tag=sl\w+", "tag=sl0123456789ab", to_value)
    cseq = re.search(r"CSeq: (\S+)", "\r\n".join(head))
    assert cseq is not None
    start = head[0].replace("INVITE ", "ACK ", 1)
    if shape.ack == "wrong-tag":  # an ACK of no answer of ours goes on by its Request-URI: not a DNS name
        start = f"ACK sip:1002@{REALM} SIP/2.0"
    lines = [start, *keep, f"To: {to_value}", f"CSeq: {cseq.group(1)} ACK",
             "Max-Forwards: 70"]  # fmt: skip
    if shape.ack != "no-cl":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def run(pair: Pair, shape: Shape) -> list[tuple[bytes, Any]]:
    """One INVITE (and its retransmission, and the ACK of a non-2xx answer), from a fresh source
    address: each example's guard state (failures, bans) is its own."""
    n = next(_SEQ)
    src = ("127.0.0.2" if shape.source == "trunk" else f"10.{n // 60000 % 250}.{n // 250 % 240}.{n % 250 + 1}",
           20000 + n % 40000)  # fmt: skip
    local = pair.local
    if shape.transport == "udp":
        flow = Flow("udp", src, local)
    else:
        flow = Flow(shape.transport, src, local, f"conn-il-{n}")
    invite = build(shape, local, n, src)
    answers = pair.send(invite, flow)
    if shape.retransmit:
        pair.send(invite, flow)
    for data, _ in answers if shape.ack != "none" else ():
        if re.match(rb"SIP/2\.0 [3-6]\d\d ", data) and b";tag=sl" in data:
            pair.send(ack_of(invite, data, shape), flow)
    return answers


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=_shapes)
def test_the_lane_answers_as_the_general_path(pair: Pair, shape: Shape) -> None:
    run(pair, shape)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    change=st.fixed_dictionaries(
        {},
        optional={
            "user": st.sampled_from(["1001", "1002", "9999"]),
            "from_host": st.sampled_from(["realm", "local", "other"]),
            "names": st.sampled_from(["full", "compact", "lower", "spaced"]),
            "ruri": st.sampled_from(["realm", "local", "phone", "other"]),
            "to": st.sampled_from(["plain", "display", "addrspec", "param"]),
            "from_display": st.sampled_from(["", '"Alice Martin" ', "Alice "]),
            "via": st.sampled_from(["plain", "rport", "received", "other-host", "noport", "lower"]),
            "extras": st.lists(
                st.sampled_from(
                    [
                        "User-Agent: Linphone/5.2",
                        "Allow: INVITE, ACK",
                        "Max-Forwards: 70",
                        "Subject: a call\r\n  folded",
                    ]
                ),
                max_size=2,
                unique=True,  # a repeated User-Agent takes the general path
            ),
            "body": st.sampled_from(["sdp", "none"]),
            "transport": st.sampled_from(["udp", "tcp", "tls"]),
            "retransmit": st.booleans(),
        },
    )
)
def test_the_lane_answers_as_the_general_path_on_what_it_takes(pair: Pair, change: dict[str, Any]) -> None:
    """The same comparison on shapes the lane reads: every INVITE takes the lane."""
    taken, requests = pair.lane.taken, metrics.REQUESTS.value("INVITE")
    answers = run(pair, Shape(**{**_BASE, **change}))
    assert answers
    # both sides count their requests: half of them were the lane side's, and all of those took the lane
    assert 2 * (pair.lane.taken - taken) == metrics.REQUESTS.value("INVITE") - requests


def test_the_lane_takes_what_phones_send(pair: Pair) -> None:
    """Not vacuous: the usual shapes are challenged on the lane (their ACKs absorbed by the general path)."""
    for change in [{}, {"names": "compact"}, {"via": "rport"}, {"transport": "tcp"}, {"ruri": "phone"}, {"to": "addrspec"},
                   {"from_host": "local", "ruri": "local"}, {"extras": ["User-Agent: Yealink", "Max-Forwards: 70"]},
                   {"from_display": '"Alice Martin" '}]:  # fmt: skip
        taken, absorbed = pair.lane.taken, metrics.DROPPED.value("ack_of_stateless_answer")
        answers = run(pair, Shape(**{**_BASE, **change}))
        assert [a[0][:12] for a in answers] == [b"SIP/2.0 407 "], change
        assert pair.lane.taken - taken == 1, change
        assert metrics.DROPPED.value("ack_of_stateless_answer") - absorbed == 2, change  # on both sides


def test_the_lane_leaves_the_rest_to_the_general_path(pair: Pair) -> None:
    for change in [{"source": "trunk"}, {"to": "tag"}, {"extras": ["Route: <sip:127.0.0.1;lr>"]},
                   {"extras": ["Proxy-Authorization: Digest garbage"]}, {"via": "two"}, {"body": "nolength"},
                   {"extras": ["Max-Forwards: 0"]}, {"transport": "ws"}, {"ruri": "tel"},
                   {"extras": ["Content-Type: a/b", "Content-Type: c/d"]}]:  # fmt: skip
        taken = pair.lane.taken
        run(pair, Shape(**{**_BASE, "ack": "none", **change}))
        assert pair.lane.taken == taken, change


def test_a_call_in_progress_with_the_call_id_is_left_to_the_controller(pair: Pair) -> None:
    """An INVITE whose Call-ID names a call we route is a spiral (482): the controller's word."""
    controller = pair.lane.app.proxy.controller
    assert controller.may_challenge("x@y", ("10.0.0.1", 5060))
    controller.calls["x@y"] = object()  # type: ignore[assignment]
    try:
        assert not controller.may_challenge("x@y", ("10.0.0.1", 5060))
    finally:
        del controller.calls["x@y"]
    assert not controller.may_challenge("x@y", ("127.0.0.2", 5060))  # the carrier's source


def test_read_keeps_what_the_answer_copies() -> None:
    remote = ("10.0.0.1", 5062)
    data = build(Shape(**{**_BASE, "via": "rport", "names": "compact"}), ("127.0.0.1", 5060), 7, remote)
    req = invite_lane.read(data, remote)
    assert req is not None and req.method == "INVITE"
    assert req.copied[0] == ("Via", "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKi7;rport=5062;received=10.0.0.1")
    assert [name for name, _ in req.copied] == ["Via", "f", "t", "i", "CSeq"] and req.to_index == 2
    assert req.destination == ("10.0.0.1", 5062) and req.tag.startswith("sl")
    assert invite_lane.read(data[:-1], remote) is None  # the body one byte short of its length


_CHOICES: dict[str, list[Any]] = {
    "user": ["1001", "1002", "9999"],
    "from_host": ["realm", "local", "other"],
    "names": ["full", "compact", "lower", "spaced"],
    "ruri": ["realm", "local", "phone", "other", "sips", "tel", "headers", "noscheme"],
    "to": ["plain", "display", "tag", "addrspec", "param"],
    "from_display": ["", '"Alice Martin" ', "Alice ", '"a\\"b" '],
    "from_params": [";tag=f1", ";tag=f1;x=y", "", ";tag=a=b"],
    "via": VIAS,
    "extras": [
        *([extra] for extra in EXTRAS),
        ["Content-Type: application/sdp", "Content-Type: text/plain"],
        ["User-Agent: a", "User-Agent: b"],
        ["Max-Forwards: 70", "Max-Forwards: 69"],
    ],
    "body": ["sdp", "none", "short", "long", "nolength"],
    "transport": ["udp", "tcp", "tls", "ws"],
    "source": ["phone", "trunk"],
    "cseq": ["1 INVITE", "2 INVITE", "1 ACK", "x INVITE", "99999999999 INVITE"],
    "retransmit": [False, True],
    "ack": ["right", "wrong-tag", "no-cl"],
}


@pytest.mark.parametrize(
    "change", [{field: value} for field, values in _CHOICES.items() for value in values], ids=repr
)
def test_each_change_from_what_phones_send(pair: Pair, change: dict[str, Any]) -> None:
    """Every spelling above alone on the usual INVITE: whichever path takes it, the same answers."""
    run(pair, Shape(**{**_BASE, **change}))


@pytest.mark.parametrize("field", ["username", "uri"])
def test_credentials_with_a_byte_that_is_not_utf8_get_a_400(pair: Pair, field: str) -> None:
    """The second INVITE, with credentials for the 407's genuine nonce, one of them holding a byte that
    is not UTF-8: 400 on both sides, nothing raised (the INVITE's digest uri is not compared with the
    Request-URI, so before the fix it reached the hash and raised out of verification)."""
    shape = Shape(**{**_BASE, "ack": "none"})
    answers = run(pair, shape)
    challenge = re.search(rb"Proxy-Authenticate: (Digest [^\r\n]*algorithm=MD5[^\r\n]*)", answers[0][0])
    assert challenge is not None
    n = next(_SEQ)
    src = (f"10.{n // 60000 % 250}.{n // 250 % 240}.{n % 250 + 1}", 20000 + n % 40000)
    invite = build(Shape(**{**_BASE, "cseq": "2 INVITE"}), pair.local, n, src)
    uri = invite.split(b" ", 2)[1].decode()
    auth = build_authorization(challenge.group(1).decode(), username="1001", password=PASSWORDS["1001"],
                               method="INVITE", uri=uri)  # fmt: skip
    head, _, rest = invite.partition(b"\r\n")
    spoiled = auth.encode().replace(f'{field}="'.encode(), f'{field}="\xff'.encode("latin-1"), 1)
    got = pair.send(
        head + b"\r\nProxy-Authorization: " + spoiled + b"\r\n" + rest, Flow("udp", src, pair.local)
    )
    assert [a[0][:12] for a in got] == [b"SIP/2.0 400 "]
