"""The C REGISTER reader (registrar/_lane_c.c) against the Python one (lane.read_py), its reference.

Contract: for any bytes, the C reader returns exactly the LaneRequest `read_py` returns, or None
(pass it on). Checked on REGISTERs assembled from spellings phones use and hostile ones, on random
mutations of them, and on the RFC 4475 / RFC 5118 torture messages; the everyday shapes must be
taken by the C reader (or the speed it exists for is gone without a failing test).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sipcore
from registrar import lane
from sipcore import speedups
from tests.extensions import require_extension

require_extension(lane._c_read, "registrar._lane_c")

c_read = lane._c_read
CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance"


def agree(data: bytes, remote: tuple[str, int]) -> bool:
    """Assert the contract for ``data``; True when the C reader took it."""
    fast = c_read(data, remote)
    if fast is not None:
        slow = lane.read_py(data, remote)
        assert fast == slow, (data, remote)
        assert type(fast) is lane.LaneRequest
        return True
    return False


REMOTES = [("127.0.0.1", 5060), ("192.0.2.7", 40312), ("10.1.2.3", 0), ("::1", 5062), ("127.0.0.1", 65535)]

# Each list: spellings the lane takes first (the first ``good`` entries), then ones it must refuse.
REQUEST_LINES = [
    "REGISTER sip:127.0.0.1:5060 SIP/2.0", "REGISTER sip:127.0.0.1 SIP/2.0", "REGISTER sip:demo.sipcore.test SIP/2.0",
    "REGISTER sip:a SIP/2.0", "REGISTER sip:h:65535 SIP/2.0", "REGISTER sip:h:05060 SIP/2.0",
    "REGISTER sip:h.example. SIP/2.0",
    "REGISTER sip:x-.com SIP/2.0", "REGISTER sip:h:65536 SIP/2.0", "REGISTER sip:h:123456 SIP/2.0",
    "REGISTER sip:h: SIP/2.0", "REGISTER sips:h SIP/2.0", "REGISTER sip:u@h SIP/2.0", "REGISTER sip:h;transport=udp SIP/2.0",
    "register sip:h SIP/2.0", "REGISTER sip:h SIP/2.1", "REGISTER  sip:h SIP/2.0", "REGISTER sip:[::1] SIP/2.0",
]  # fmt: skip
VIA_NAMES = ["Via", "v", "VIA", "via ", "Via  "]
VIAS = [
    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1-1", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1-1;rport",
    "SIP/2.0/UDP 10.0.0.9:5060;rport;branch=z9hG4bKabc", "SIP/2.0/udp phone.lan;branch=z9hG4bK1;rport",
    "SIP/2.0/TCP 192.0.2.7:05060;branch=z9hG4bK2", "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK3;received=1.2.3.4",
    "SIP/2.0/UDP 192.0.2.7;received=[::1];branch=z9hG4bK3", "SIP/2.0/UDP h;branch=z9hG4bK4;rport=7000",
    "SIP/2.0/UDP h;branch=z9hG4bK4;rport=x;RPORT", "SIP/2.0/UDP h;branch=z9hG4bK4;Received=9.9.9.9;rport;received=8.8.8.8",
    "SIP/2.0/UDP h;Branch=z9hG4bK6;branch=z9hG4bK7", "SIP/2.0/UDP h:0;branch=z9hG4bK9;rport",
    "SIP/2.0/UDP 127.0.0.001;branch=z9hG4bKc", "SIP/2.0/UDP h;branch=z9hG4bK=d=e",
    "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKh;rport;ttl=1", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKi;received=127.0.0.1",
    "SIP/2.0/UDP h;branch=z9hG4bK5;maddr=1.1.1.1", "SIP/2.0/UDP h;branch=abc", "SIP/2.0/UDP h;branch",
    "SIP/2.0/UDP h;branch=", "SIP/2.0/SCTP h;branch=z9hG4bK8", "SIP/2.0/Udp h;branch=z9hG4bK8",
    "SIP/2.0/UDP  h;branch=z9hG4bK8", "SIP/2.0/UDP h:65536;branch=z9hG4bK9",
    "SIP/2.0/UDP h;branch=z9hG4bK9, SIP/2.0/UDP i;branch=z9hG4bKa", "SIP/2.0/UDP ::1;branch=z9hG4bKb",
    "SIP/2.0/UDP h;branch=z9hG4bKf;rport=99999999999999999999", "SIP/2.0/UDP h;branch=z9hG4bKg;x\"=1",
]  # fmt: skip
FROMS = [
    "<sip:u10000@127.0.0.1:5060>;tag=1SIPpTag01", '"Alice Martin" <sip:1001@demo>;tag=a', "Alice <sip:1001@demo>;tag=b",
    "Alice  Bob<sip:x@y>", "<sip:x@y>", "<tel:+331>;tag=c", "<sip:x@y>;tag", "<sip:x@y>;tag=a,b", "<:x>",
    '"a\\"b" <sip:x@y>;tag=d', "sip:x@y;tag=e", "<sip:x@y>;tag=", "<x>", '<sip:x@y>;tag="q"', "<sip:a<b@y>",
    " Bob <sip:x@y>",
]  # fmt: skip
TOS = [
    "<sip:u10000@127.0.0.1:5060>", "<sip:1001@demo.sipcore.test>", '"Alice" <sip:1001@demo>', "Alice <sip:1001@h:5060>",
    "<sip:1001%30@demo>", "<sip:1001@demo> ",
    "<sip:1001@demo>;tag=x1", "sip:1001@demo", "<sips:1001@demo>", "<sip:@demo>", "<sip:1001@demo:99999>",
    "<sip:10:01@demo>", "<sip:1001@-demo>", "<sip:1001@demo->", "<SIP:1001@demo>",
]  # fmt: skip
CONTACTS = [
    "<sip:u10000@127.0.0.1:45061;transport=UDP>", "<sip:1001@192.0.2.7:5060>;expires=0", "<sip:1001@h>;expires=30;q=0.5",
    "<sip:1001@h>;expires=99999999999999999999", "<sip:1001@h>;q=1", "<sip:1001@h>;q=0.", "<sip:1001@h>;q=0.125",
    "<sip:1001@h>;+sip.instance=abc;reg-id", "<sip:1001@h>;Expires=5;EXPIRES=6", '"Desk" <sip:1001@h;transport=tcp>',
    "Desk Phone <sip:h>", "<sip:1001@h;lr;x=>", "<sip:h:5060;ob>", "<sip:1001@h>;reg-id=2;+SIP.INSTANCE=x",
    "<sip:1001@h>;expires", "<sip:1001@h>;expires=x", "<sip:1001@h>;q=1.0001", "<sip:1001@h>;q=1.5", "<sip:1001@h>;q=01",
    "<sip:1001@h>;q", '<sip:1001@h>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1', "*",
    "<sip:1001@h>, <sip:1002@h>", "sip:1001@h", "<sip:1001@h:65536>", "<sip:@h>", "<sip:1001@h;x=a?b>", "<sip:u@v@h>",
    "<sip:1001@h?subject=x>", "<sips:1001@h>", "<sip:1001@[::1]:5060>", "<sip:1001@h>;x=\"y\"",
]  # fmt: skip
OTHERS = [
    "Max-Forwards: 70", "Expires: 3600", "Expires: 0", "Expires: 1099511627776", "User-Agent: Yealink SIP-T46U",
    "User-Agent:", "Content-Length: 0", "Content-Length: 000", "l: 0", "Allow: INVITE, ACK", "Supported: path",
    "k: outbound", "s: subject", "X-Custom: a:b", "X-Ok:y", "Date: Sat, 13 Nov 2010 23:29:00 GMT",
    'Authorization: Digest username="u10000", realm="x", nonce="n", uri="sip:h", response="r"',
    "Max-Forwards: x", "Max-Forwards: ", "Expires: 1099511627777", "Expires: -1", "Content-Length: 5", "Require: foo",
    "Path: <sip:e@x;lr>", "Route: <sip:x;lr>", "c: text/plain", "e: gzip", "Proxy-Authorization: x", "m: <sip:x@y>",
    "Expires: 3600", "Call-ID: other", "CSeq: 9 REGISTER", ": x", "X Bad: y",
]  # fmt: skip
CALL_IDS = ["1-2@127.0.0.1", "a84b4c76e66710@pc33.atlanta.com", "x", 'q"uote', "semi;colon", "", "a b"]
CSEQS = ["1 REGISTER", "2 REGISTER", "2147483647 REGISTER", "01 REGISTER", "2147483648 REGISTER", "1 register",
         "12345678901 REGISTER", "1  REGISTER", "REGISTER", "1 INVITE"]  # fmt: skip


def mostly_good(values: list[str], good: int) -> st.SearchStrategy[str]:
    """One of ``values``: one of its first ``good`` (spellings the lane takes) 19 times in 20,
    so most messages reach the deep checks, else any of them."""
    return st.sampled_from(values[:good] * 19 + values)


@st.composite
def registers(draw: st.DrawFn) -> bytes:
    lines = [draw(mostly_good(REQUEST_LINES, 7))]
    headers = [
        (draw(st.sampled_from(VIA_NAMES)), draw(mostly_good(VIAS, 16))),
        (draw(st.sampled_from(["From", "f", "from"])), draw(mostly_good(FROMS, 9))),
        (draw(st.sampled_from(["To", "t", "TO"])), draw(mostly_good(TOS, 6))),
        (draw(st.sampled_from(["Call-ID", "i", "call-id"])), draw(mostly_good(CALL_IDS, 5))),
        (draw(st.sampled_from(["CSeq", "cseq"])), draw(mostly_good(CSEQS, 4))),
        (draw(st.sampled_from(["Contact", "m"])), draw(mostly_good(CONTACTS, 14))),
    ]
    headers = [
        h for h in headers if draw(st.sampled_from([True] * 29 + [False]))
    ]  # now and then one is missing
    for other in draw(st.lists(mostly_good(OTHERS, 17), max_size=4)):
        name, _, value = other.partition(":")
        headers.insert(draw(st.integers(0, len(headers))), (name, value.lstrip()))
    order = (
        draw(st.permutations(range(len(headers))))
        if draw(st.sampled_from([False] * 4 + [True]))
        else range(len(headers))
    )
    for i in order:
        name, value = headers[i]
        sep = draw(st.sampled_from([": "] * 6 + [":", " : ", ":  "]))
        tail = draw(st.sampled_from([""] * 6 + [" "]))
        lines.append(f"{name}{sep}{value}{tail}")
    end = draw(st.sampled_from(["\r\n\r\n"] * 16 + ["\r\n\r\nbody", "\r\n", "\r\n\r\n\r\n", "\n\n"]))
    return ("\r\n".join(lines) + end).encode()


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registers(), st.sampled_from(REMOTES))
def test_the_c_reader_agrees_with_the_python_reader(data: bytes, remote: tuple[str, int]) -> None:
    agree(data, remote)


MUTATIONS = [b" ", b";", b"=", b":", b"<", b">", b'"', b"@", b"\r\n", b"\t", b"\n", b"\r", b"0", b"9", b"-", b".",
             b"A", b",", b"\\", b"\xc3\xa9", b"\x00", b"\x7f", b"?", b"[", b"]", b"*", b""]  # fmt: skip


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registers(), st.lists(st.tuples(st.floats(0, 1), st.sampled_from(MUTATIONS), st.integers(0, 3)), max_size=3),
       st.sampled_from(REMOTES))  # fmt: skip
def test_the_c_reader_agrees_on_mutated_registers(
    data: bytes, edits: list[tuple[float, bytes, int]], remote: tuple[str, int]
) -> None:
    for where, insert, cut in edits:
        i = int(where * len(data))
        data = data[:i] + insert + data[i + cut :]
    agree(data, remote)


SIPP = (
    "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:45061;branch=z9hG4bK-7-1\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:u10007@127.0.0.1:5060>;tag=7SIPpTag07\r\n"
    "To: <sip:u10007@127.0.0.1:5060>\r\n"
    "Call-ID: 7-4711@127.0.0.1\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:u10007@127.0.0.1:45061;transport=UDP>\r\n"
    "{auth}"
    "Expires: 3600\r\n"
    "User-Agent: sipp-bench\r\n"
    "Content-Length: 0\r\n\r\n"
)
DESK_PHONE = (  # behind NAT, rport asked, an expires parameter, a reg-id
    "REGISTER sip:demo.sipcore.test SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK8e3a2c;rport\r\n"
    "Contact: <sip:1001-0x5581@192.168.1.20:5060;transport=udp>;expires=3600;reg-id=1;q=0.9\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:1001@demo.sipcore.test>\r\n"
    "From: <sip:1001@demo.sipcore.test>;tag=c1d2e3\r\n"
    "Call-ID: 5d1f0a8e7c6b\r\n"
    "CSeq: 14285 REGISTER\r\n"
    "{auth}"
    "User-Agent: Yealink SIP-T46U 66.86.0.15\r\n"
    "Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER\r\n"
    "Supported: outbound,path,replaces\r\n"
    "Content-Length: 0\r\n\r\n"
)
AUTH = (
    'Authorization: Digest username="u10007",realm="127.0.0.1",cnonce="6b8b4567",nc=00000001,qop=auth,'
    'uri="sip:127.0.0.1:5060",nonce="AAAA-abc_def",response="0123456789abcdef0123456789abcdef",algorithm=MD5\r\n'
)


@pytest.mark.parametrize("template", [SIPP, DESK_PHONE], ids=["sipp", "desk-phone"])
@pytest.mark.parametrize("auth", ["", AUTH], ids=["first", "authenticated"])
@pytest.mark.parametrize("remote", [("127.0.0.1", 45061), ("203.0.113.5", 33012)])
def test_the_everyday_registers_are_taken_by_the_c_reader(
    template: str, auth: str, remote: tuple[str, int]
) -> None:
    data = template.format(auth=auth).encode()
    assert lane.read_py(data, remote) is not None
    assert agree(data, remote), "the C reader passed on an everyday REGISTER"


def test_the_torture_messages_agree() -> None:
    files = sorted(CONFORMANCE.glob("rfc*/*.sip"))
    assert len(files) >= 40, CONFORMANCE
    for path in files:
        data = path.read_bytes()
        for remote in REMOTES[:2]:
            agree(data, remote)
            # the same message as a REGISTER with its head closed, so more of it reaches the deep checks
            head = data.split(b"\r\n\r\n", 1)[0]
            rest = head.partition(b"\r\n")[2]
            agree(b"REGISTER sip:127.0.0.1 SIP/2.0\r\n" + rest + b"\r\n\r\n", remote)


def test_the_reader_refuses_a_wrong_lane_request_class() -> None:
    from typing import NamedTuple

    from registrar import _lane_c

    class Short(NamedTuple):
        a: int

    with pytest.raises(ValueError, match="fields"):
        _lane_c.setup(Short, lane.stable_tag, lane.same_host, lane.COMPACT)
    with pytest.raises(TypeError):
        _lane_c.setup(dict, lane.stable_tag, lane.same_host, lane.COMPACT)


def test_each_package_loads_its_extension_and_the_operator_switch_turns_them_off() -> None:
    """Each package loads its own extension (sipcore.speedups names none): registrar.lane,
    sipcore.digest, sipcore.message, sipcore.ownership, rating.rater, server.group_commit;
    `speedups.LOADED` lists them for the start-up log, after the mypyc build where there is one
    (loaded with sipcore); SIPCORE_PURE_PYTHON=1 leaves them all out."""
    code = (
        "from sipcore import speedups\n"
        "assert all(name.startswith('compiled: ') for name in speedups.LOADED), speedups.LOADED\n"
        "import registrar.lane, sipcore.digest, sipcore.message, sipcore.ownership, rating.rater,"
        " server.group_commit\n"
        "print(sorted(speedups.LOADED), registrar.lane._c_read is None, sipcore.digest._c_params is None,"
        " sipcore.digest._c_expected is None, sipcore.message._c_split is None,"
        " sipcore.ownership._c_owner is None, rating.rater._rater_c is None,"
        " server.group_commit._native is None)"
    )
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "SIPCORE_PURE_PYTHON"}

    def run(**extra: str) -> str:
        cmd = [sys.executable, "-c", code]
        return subprocess.run(
            cmd, env={**env, **extra}, cwd=root, check=True, capture_output=True, text=True
        ).stdout

    loaded = [
        "rating._rater_c",
        "registrar._lane_c",
        "server._group_commit_c",
        "sipcore._digest_c",
        "sipcore._digest_hash_c",
        "sipcore._message_c",
        "sipcore._ownership_c",
    ]
    compiled = Path(sipcore.__file__).parent / "_compiled"
    if str(compiled) in sipcore.__path__:  # this process runs the build: so does the child
        loaded = sorted([*loaded, next(n for n in speedups.LOADED if n.startswith("compiled: "))])
    assert run() == f"{loaded} False False False False False False False\n"
    assert run(SIPCORE_PURE_PYTHON="1") == "[] True True True True True True True\n"
