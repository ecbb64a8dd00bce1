"""Calls and registrations through the real `Application`, message by message, described as what
the server sent in answer to each message: the same description from the mypyc build and from the
Python sources (tests/server/test_compiled_calls.py compares them). The server is the benchmark's (10,000 accounts
and a registered callee, benchmarks/bench_sip_cpu.py), fed as the UDP endpoint would feed it.

Values the server draws at random (branches, tags, nonces) and the process id in the Call-IDs are
replaced by their order of first appearance, so two runs compare equal exactly when they send the
same messages to the same places with the same values in the same positions; the Date of a 200 to a
REGISTER is replaced too."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_sip_cpu import (
    _SDP,
    UAC,
    UAS,
    CallDriver,
    _authorization,
    _challenge,
    _header,
    _started,
    register_callee,
    register_pair,
)
from benchmarks.make_bench_config import DOMAIN
from sipcore.flow import Flow

_RANDOM = re.compile(rb'(branch=|tag=)([^;,\s>]+)|((?:nonce|opaque|response|cnonce)=")([^"]*)')
_DATE = re.compile(rb"\r\nDate: [^\r]*")

Sent = list[tuple[bytes, tuple[str, int]]]


class Canon:
    """Replaces each random value by a name given in order of first appearance, and the server's
    port (a free one) and this process's id (in the Call-IDs) by placeholders."""

    def __init__(self, port: int) -> None:
        self.names: dict[bytes, str] = {}
        self.port = re.compile(rb":%d\b" % port)
        self.pid = re.compile(rb"-%d@" % os.getpid())

    def __call__(self, data: bytes) -> str:
        data = _DATE.sub(b"\r\nDate: <date>", self.pid.sub(b"-PID@", self.port.sub(b":PORT", data)))

        def name(m: re.Match[bytes]) -> bytes:
            prefix, value = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            return prefix + self.names.setdefault(value, f"<{len(self.names)}>").encode()

        return _RANDOM.sub(name, data).decode("utf-8", "backslashreplace")


def _last(sent: Sent, to: tuple[str, int], start: str) -> bytes:
    for data, addr in reversed(sent):
        if addr == to and data.startswith(start.encode()):
            return data
    raise AssertionError(f"no {start} to {to}: {[d[:40] for d, _ in sent]}")


def _register(i: int, cseq: int, host: str, port: int, lines: str, user: str = "") -> bytes:
    """A REGISTER of user u1xxxx of ``i`` (or ``user``) from the bench's UAC, with ``lines`` (Contact,
    Expires, Authorization...) between CSeq and Content-Length."""
    user = user or f"u{10000 + i}"
    return (
        f"REGISTER sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch=z9hG4bK-r{i}-{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{host}:{port}>;tag=r{i}\r\n"
        f"To: <sip:{user}@{host}:{port}>\r\n"
        f"Call-ID: reg-{i}-{os.getpid()}@127.0.0.1\r\n"
        f"CSeq: {cseq} REGISTER\r\n{lines}Content-Length: 0\r\n\r\n"
    ).encode()


def _request(method: str, ruri: str, i: int, cseq: int, branch: str, to: str, extra: str = "") -> bytes:
    """A request from the caller of call ``i`` (the bench's UAC), outside what CallDriver sends."""
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {UAC[0]}:{UAC[1]};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:u{10000 + i}@127.0.0.1>;tag={i}SIPpTag00\r\n"
        f"To: {to}\r\n"
        f"Call-ID: call-{i}-{os.getpid()}@127.0.0.1\r\n"
        f"CSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


async def describe() -> dict[str, Any]:
    """Each scenario's exchanges: [message fed, [(destination, message sent), ...]] in order."""
    from sipcore import speedups

    with tempfile.TemporaryDirectory() as tmp:
        app, cap, host, port = await _started(Path(tmp))
        try:
            await register_callee(app, cap, host, port)
            canon = Canon(port)
            uac, uas = Flow("udp", UAC, cap.local), Flow("udp", UAS, cap.local)
            drv = CallDriver(host, port)
            log: list[Any] = []

            def feed(data: bytes, flow: Flow) -> Sent:
                cap.sent.clear()
                app.sip.on_message(data, flow)
                app.sip.transports.flush_udp()
                sent = list(cap.sent)
                log.append([canon(data), [[f"{a[0]}:{a[1]}", canon(d)] for d, a in sent]])
                return sent

            def authed(i: int, password: str | None = None) -> bytes:
                """The INVITE of call ``i`` answered by its 407 challenge, then sent with credentials."""
                challenge = _last(feed(drv.invite(i, 1), uac), UAC, "SIP/2.0 407")
                feed(drv.ack_407(i, challenge), uac)
                if password is None:
                    return drv.authed_invite(i, challenge)
                user, uri = f"u{10000 + i}", f"sip:callee@{host}:{port}"
                credentials = _authorization(_challenge(challenge, "proxy-authenticate"), user, password,
                                             "INVITE", uri)  # fmt: skip
                return drv.invite(i, 2, f"Proxy-Authorization: {credentials}\r\n")

            scenarios: dict[str, Callable[[int], None]] = {}

            def scenario(fn: Callable[[int], None]) -> Callable[[int], None]:
                scenarios[fn.__name__] = fn
                return fn

            @scenario
            def answered(i: int) -> None:
                relayed = _last(feed(authed(i), uac), UAS, "INVITE ")
                tag = f"{i}SIPpTag01"
                feed(drv.uas_answer(relayed, "100 Trying", tag), uas)
                feed(drv.uas_answer(relayed, "180 Ringing", tag), uas)
                ok = _last(feed(drv.uas_answer(relayed, "200 OK", tag, _SDP), uas), UAC, "SIP/2.0 200")
                feed(drv.uas_answer(relayed, "200 OK", tag, _SDP), uas)  # a retransmission
                feed(drv.in_dialog(i, "ACK", 2, ok), uac)
                bye = _last(feed(drv.in_dialog(i, "BYE", 3, ok), uac), UAS, "BYE ")
                feed(drv.uas_answer(bye, "200 OK", tag), uas)
                feed(drv.in_dialog(i, "BYE", 3, ok), uac)  # the BYE again: answered from its transaction

            @scenario
            def callee_hangs_up(i: int) -> None:
                relayed = _last(feed(authed(i), uac), UAS, "INVITE ")
                tag = f"{i}SIPpTag01"
                ok = _last(feed(drv.uas_answer(relayed, "200 OK", tag, _SDP), uas), UAC, "SIP/2.0 200")
                feed(drv.in_dialog(i, "ACK", 2, ok), uac)
                caller = f"<sip:u{10000 + i}@{host}:{port}>;tag={i}SIPpTag00"
                bye = (
                    f"BYE sip:u{10000 + i}@{UAC[0]}:{UAC[1]} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {UAS[0]}:{UAS[1]};branch=z9hG4bK-b{i}\r\n"
                    + "".join(f"Route: {ln.partition(':')[2].strip()}\r\n"
                              for ln in relayed.decode().split("\r\n") if ln.lower().startswith("record-route:"))
                    + f"Max-Forwards: 70\r\nFrom: {_header(ok, 'to')}\r\nTo: {caller}\r\n"
                    f"Call-ID: call-{i}-{os.getpid()}@127.0.0.1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
                ).encode()  # fmt: skip
                down = _last(feed(bye, uas), UAC, "BYE ")
                feed(drv.uas_answer(down, "200 OK", "x"), uac)

            @scenario
            def busy(i: int) -> None:
                relayed = _last(feed(authed(i), uac), UAS, "INVITE ")
                tag = f"{i}SIPpTag01"
                feed(drv.uas_answer(relayed, "180 Ringing", tag), uas)
                busy = _last(feed(drv.uas_answer(relayed, "486 Busy Here", tag), uas), UAC, "SIP/2.0 486")
                feed(_request("ACK", f"sip:callee@{host}:{port}", i, 2, f"z9hG4bK-c{i}-2",
                              _header(busy, "to")), uac)  # fmt: skip

            @scenario
            def cancelled(i: int) -> None:
                relayed = _last(feed(authed(i), uac), UAS, "INVITE ")
                tag = f"{i}SIPpTag01"
                feed(drv.uas_answer(relayed, "180 Ringing", tag), uas)
                to = f"<sip:callee@{host}:{port}>"
                cancel = _last(feed(_request("CANCEL", f"sip:callee@{host}:{port}", i, 2, f"z9hG4bK-c{i}-2", to),
                                    uac), UAS, "CANCEL ")  # fmt: skip
                feed(drv.uas_answer(cancel, "200 OK", tag), uas)
                final = _last(
                    feed(drv.uas_answer(relayed, "487 Request Terminated", tag), uas), UAC, "SIP/2.0 487"
                )
                feed(_request("ACK", f"sip:callee@{host}:{port}", i, 2, f"z9hG4bK-c{i}-2",
                              _header(final, "to")), uac)  # fmt: skip

            @scenario
            def wrong_password(i: int) -> None:
                feed(authed(i, password="not-the-password"), uac)

            @scenario
            def unknown_callee(i: int) -> None:
                uri, to = f"sip:nobody@{host}:{port}", f"<sip:nobody@{host}:{port}>"
                challenge = _last(
                    feed(_request("INVITE", uri, i, 1, f"z9hG4bK-n{i}", to), uac), UAC, "SIP/2.0 407"
                )
                feed(_request("ACK", uri, i, 1, f"z9hG4bK-n{i}", _header(challenge, "to")), uac)
                ch = _challenge(challenge, "proxy-authenticate")
                credentials = _authorization(ch, f"u{10000 + i}", f"pwu{10000 + i}", "INVITE", uri)
                final = _last(feed(_request("INVITE", uri, i, 2, f"z9hG4bK-n{i}-2", to,
                                            f"Proxy-Authorization: {credentials}\r\n"), uac), UAC, "SIP/2.0 4")  # fmt: skip
                # acknowledged: no retransmission is left to fire during a later scenario
                feed(_request("ACK", uri, i, 2, f"z9hG4bK-n{i}-2", _header(final, "to")), uac)

            @scenario
            def out_of_dialog(i: int) -> None:
                to = f"<sip:callee@{host}:{port}>;tag=gone"
                feed(_request("BYE", f"sip:callee@{host}:{port}", i, 5, f"z9hG4bK-o{i}", to), uac)
                feed(
                    _request("OPTIONS", f"sip:{host}:{port}", i, 6, f"z9hG4bK-p{i}", f"<sip:{host}:{port}>"),
                    uac,
                )
                feed(_request("MESSAGE", f"sip:callee@{host}:{port}", i, 7, f"z9hG4bK-m{i}",
                              f"<sip:callee@{host}:{port}>"), uac)  # fmt: skip

            def registered(i: int, cseq: int, lines: str, user: str = "", password: str = "") -> bytes:
                """A REGISTER with ``lines`` answered 401, then sent again with credentials."""
                user = user or f"u{10000 + i}"
                challenge = _last(feed(_register(i, cseq, host, port, lines, user), uac), UAC, "SIP/2.0 401")
                ch = _challenge(challenge, "www-authenticate")
                credentials = _authorization(
                    ch, user, password or "pw" + user, "REGISTER", f"sip:{host}:{port}"
                )
                return _register(i, cseq + 1, host, port, f"{lines}Authorization: {credentials}\r\n", user)

            contact = f"Contact: <sip:u{{}}@{UAC[0]}:{UAC[1]};transport=UDP>\r\n"

            @scenario
            def register_as_sipp_does(i: int) -> None:  # the REGISTER lane's everyday shape
                first, second = register_pair(host, port, i)
                authed = second(_last(feed(first, uac), UAC, "SIP/2.0 401"))
                feed(authed, uac)
                feed(authed, uac)  # a retransmission: the kept answer

            @scenario
            def register_refresh_query_and_remove(i: int) -> None:
                user = 10000 + i
                feed(registered(i, 1, contact.format(user) + "Expires: 600\r\n"), uac)
                feed(
                    registered(i, 3, contact.format(user).replace(">", ">;expires=120") + "Expires: 600\r\n"),
                    uac,
                )
                feed(registered(i, 5, ""), uac)  # a query: the bindings listed
                second = f"Contact: <sip:u{user}@{UAC[0]}:5070>;q=0.5, <sip:u{user}@{UAC[0]}:5080>\r\n"
                feed(registered(i, 7, second), uac)  # two Contacts: the general path
                feed(registered(i, 9, "Contact: *\r\nExpires: 0\r\n"), uac)

            @scenario
            def register_refused(i: int) -> None:
                user = 10000 + i
                feed(registered(i, 1, contact.format(user), password="not-the-password"), uac)
                feed(registered(i, 3, contact.format(user), user="nobody"), uac)
                forged = (f'Digest username="u{user}",realm="{DOMAIN}",nonce="bm9ub25jZQ",'
                          f'uri="sip:{host}:{port}",response="{"0" * 32}"')  # fmt: skip
                feed(_register(i, 5, host, port, contact.format(user) + f"Authorization: {forged}\r\n"), uac)
                feed(registered(i, 6, "Contact: *\r\n"), uac)  # "*" without Expires: 0
                feed(registered(i, 8, contact.format(user) + "Expires: 10\r\n"), uac)  # too brief

            out: dict[str, Any] = {"loaded": [n for n in speedups.LOADED if n.startswith("compiled: ")]}
            for k, (name, run) in enumerate(scenarios.items()):
                log = []
                run(k + 1)
                await asyncio.sleep(0.05)  # timers and write-behind, as between datagrams
                out[name] = log
            return out
        finally:
            await app.close()


def main() -> None:
    print(json.dumps(asyncio.run(describe())))


if __name__ == "__main__":
    sys.exit(main())
