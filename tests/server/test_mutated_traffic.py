"""Mutated traffic through a live `sipcore serve` (one worker, UDP and TCP): bit flips, truncations,
repeated headers, huge values, malformed hosts and random bytes, from a seeded RNG, over the
torture messages and the requests phones send this server (registrations, calls to extensions and
to the trunk, in-dialog requests, responses). The server must log no traceback and no error-level
line, and answer a valid OPTIONS and REGISTER afterwards on both transports (issue 20, fuzzing)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from pathlib import Path

from fuzz.seeds import messages
from sipcore.waiting import within
from tests.conftest import free_port
from tests.proxy_sip.configs import DOMAIN, write_config
from tests.server.lifecycle_helpers import serve_process
from tests.sip_mutations import mutate

SEED = 20_2026
UDP_MESSAGES = 2400
TCP_MESSAGES = 800
TCP_PER_CONNECTION = 20

_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8\r\n"
)


def _request(method: str, ruri: str, extra: str = "", body: bytes = b"", to_tag: str = "") -> bytes:
    head = (
        f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{random.getrandbits(32):x};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:1001@{DOMAIN}>;tag=f1\r\nTo: <{ruri}>{to_tag}\r\n"
        f"Call-ID: mut-{random.getrandbits(32):x}\r\nCSeq: 1 {method}\r\nContact: <sip:1001@127.0.0.1:5099>\r\n"
        f"{extra}"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def templates() -> list[bytes]:
    """What this server's phones and trunk send, and the torture corpus."""
    auth = (
        f'Digest username="1001", realm="{DOMAIN}", nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", '
        f'uri="sip:{DOMAIN}", response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, '
        'nc=00000001, cnonce="abc"'
    )
    ours = [
        _request("REGISTER", f"sip:{DOMAIN}", "Expires: 3600\r\n"),
        _request("REGISTER", f"sip:{DOMAIN}", f"Expires: 60\r\nAuthorization: {auth}\r\n"),
        _request("INVITE", f"sip:1002@{DOMAIN}", body=_SDP),
        _request("INVITE", f"sip:0612345678@{DOMAIN}", f"Proxy-Authorization: {auth}\r\n", _SDP),
        _request("INVITE", "sip:1002@127.0.0.1", "Route: <sip:127.0.0.1;lr>\r\n", _SDP),
        _request("OPTIONS", f"sip:{DOMAIN}"),
        _request("BYE", f"sip:1002@{DOMAIN}", "Route: <sip:127.0.0.1;lr>\r\n", to_tag=";tag=t2"),
        _request("ACK", "sip:1002@127.0.0.1:5098", to_tag=";tag=t2"),
        _request("CANCEL", f"sip:1002@{DOMAIN}"),
        _request("SUBSCRIBE", f"sip:1001@{DOMAIN}", "Event: message-summary\r\n"),
        _request("MESSAGE", f"sip:1002@{DOMAIN}", "Content-Type: text/plain\r\n"),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnone\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    ]
    return ours + messages()


def regressions() -> list[tuple[bytes, bytes]]:
    """(request, the answer's start) for each bug mutated traffic found (issue 20): each was an
    exception logged as message_handling_failed (or a task's) and no answer at all."""
    huge = b"7" * 5000  # int() refuses more than 4,300 digits
    options = _request("OPTIONS", f"sip:{DOMAIN}")
    return [
        (_request("INVITE", f"sip:1002@{DOMAIN}").replace(f"<sip:1001@{DOMAIN}>".encode(), b"<sip:1001@[::1>"),
         b"SIP/2.0 400 "),  # a From URI first parsed by the proxy's authentication
        (options.replace(b"Max-Forwards: 70", b"Max-Forwards: " + huge), b"SIP/2.0 200 "),  # as absent
        (options.replace(b"Max-Forwards: 70", "Max-Forwards: \u00b2".encode()), b"SIP/2.0 400 "),
        (options.replace(b"CSeq: 1 ", b"CSeq: " + huge + b" "), b"SIP/2.0 400 "),
        (options.replace(b"Content-Length: 0", b"Content-Length: " + huge), b"SIP/2.0 400 "),
        (options.replace(b"Contact: <sip:1001@127.0.0.1:5099>", b"Contact: <sip:1001@127.0.0.1:" + huge + b">"),
         b"SIP/2.0 200 "),  # an OPTIONS Contact is not read
        (_request("REGISTER", f"sip:{DOMAIN}", "Expires: " + "6" * 5000 + "\r\n"), b"SIP/2.0 401 "),
    ]  # fmt: skip


def _problems(stderr: bytes) -> list[str]:
    """Log lines that betray an unhandled exception or an error."""
    bad: list[str] = []
    lines = stderr.decode(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if "Traceback" in line or "Exception in callback" in line or "exception was never retrieved" in line:
            bad.append("\n".join(lines[i : i + 30]))  # with the traceback that follows
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and (
            str(entry.get("level", "")).lower() in ("error", "critical", "exception")
            or entry.get("event") == "message_handling_failed"
            or "exception" in entry
        ):
            bad.append(line[:2000])
    return bad


async def _udp_exchange(sock: socket.socket, data: bytes, timeout: float = 5) -> bytes:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, data)
    return await within(loop.sock_recv(sock, 65535), timeout)


async def _tcp_exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await within(reader.readuntil(b"\r\n\r\n"), timeout)
    finally:
        writer.close()


async def _send_tcp(port: int, batch: list[bytes]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        for data in batch:
            writer.write(data)
        await writer.drain()
        try:  # read what comes back for a moment, then hang up (a half-message may be pending)
            await within(reader.read(1 << 20), 0.05)
        except TimeoutError:
            pass
    except OSError:
        pass  # the server closed a connection whose stream it could not frame
    finally:
        writer.close()


async def test_mutated_traffic_leaves_no_traceback_and_the_server_answering(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    random.seed(SEED)  # the templates' branches and Call-IDs
    sources = templates()
    config = write_config(tmp_path, free_port(), free_port())
    text = config.read_text()  # no admin listener: its port may be another server's
    config.write_text(text.replace("  metrics: null\n", "  metrics: null\n  admin: null\n", 1))
    async with serve_process(config, workers=1) as server:
        loop = asyncio.get_running_loop()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setblocking(False)
        udp.connect(server.address)
        port = str(udp.getsockname()[1]).encode()
        try:
            for data, expected in regressions():  # answered (over UDP, to our port: rport)
                answer = await _udp_exchange(udp, data.replace(b"5099", port))
                assert answer.startswith(expected), (data[:300], answer[:300])
            for i in range(UDP_MESSAGES):
                data = mutate(rng, rng.choice(sources))[:65000]
                try:
                    await loop.sock_sendall(udp, data)
                except OSError:  # e.g. ECONNREFUSED from an earlier ICMP error: not the server's fault
                    pass
                if i % 25 == 0:
                    await asyncio.sleep(0.005)  # paced: the point is odd input, not a flood
            for _ in range(TCP_MESSAGES // TCP_PER_CONNECTION):
                batch = [mutate(rng, rng.choice(sources)) for _ in range(TCP_PER_CONNECTION)]
                await _send_tcp(server.port, batch)
            await asyncio.sleep(0.5)
            while True:  # drop what the server answered to the mutated traffic
                try:
                    udp.recv(65535)
                except (BlockingIOError, ConnectionRefusedError):
                    break
            # still serving: a valid OPTIONS and REGISTER, on UDP and on TCP
            for method, expected in (("OPTIONS", b"SIP/2.0 200 "), ("REGISTER", b"SIP/2.0 401 ")):
                data = _request(method, f"sip:{DOMAIN}").replace(b"5099", port)
                answer = await _udp_exchange(udp, data)
                assert answer.startswith(expected), answer[:200]
                data = _request(method, f"sip:{DOMAIN}").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
                answer = await _tcp_exchange(server.port, data)
                assert answer.startswith(expected), answer[:200]
        finally:
            udp.close()
        server.terminate()
        assert await server.wait() == 0
    problems = _problems(server.stderr)
    assert not problems, "\n".join(problems[:20])
