"""The kernel's steering (sipcore/steering.py) against `owner_of`, through a real SO_REUSEPORT group.

Every datagram sent must arrive on exactly one socket; every one whose Call-ID the program can read
(`_readable`) must arrive on the socket of the worker `owner_of` names. The rest may land anywhere:
their reader hands them over."""

from __future__ import annotations

import random
import socket
import time
import zlib

import pytest

from sipcore.ownership import call_id_slot, fold, owner_of, owner_of_call_id
from sipcore.steering import BLOCK, BUDGETS, bind_steered, program, scanned_bytes
from sipcore.transport import ListenError, bind_udp


def _readable(data: bytes, scanned: int) -> bool:
    """What the program promises to steer: the first "\\nCal" opens "\\nCall-ID:" within the scanned
    offsets, at most one space, a value of 16 bytes or more ending in CR, and 42 bytes readable
    after the "\\n"."""
    p = data.find(b"\nCal")
    if p < 0 or p >= scanned or data[p : p + 9] != b"\nCall-ID:" or len(data) < p + 42:
        return False
    start = p + 10 if data[p + 9 : p + 10] == b" " else p + 9
    end = data.find(b"\r", start)
    value = data[start:end]
    if len(value) < 16 or value[:1] in (b" ", b"\t") or b"\n" in value or b" " in value:
        return False
    block_end = (p // BLOCK + 1) * BLOCK
    return len(data) >= block_end + 3  # the scan checks its whole block is readable


def _message(rng: random.Random, i: int) -> bytes:
    call_id = rng.choice(
        [
            f"{i}-4242@127.0.0.1",  # SIPp's shape: 16-20 bytes, the counter first
            f"{rng.getrandbits(128):032x}@10.0.0.1",
            f"x{i}",  # short: crc32, not steered
            f"callprefix-0000-{i}@pbx",  # a constant prefix, the counter at the end
            "".join(rng.choice("abcdef0123456789-") for _ in range(rng.randint(10, 40))),
        ]
    )
    pad = "".join(f"X-Pad{k}: {'a' * rng.randint(0, 120)}\r\n" for k in range(rng.randint(0, 6)))
    space = rng.choice([" ", " ", "", "  "])
    name = rng.choice(["Call-ID"] * 6 + ["i", "call-id", "CALL-ID"])
    info = "Call-Info: <http://x/y>\r\n" if rng.random() < 0.05 else ""
    tail = rng.choice(["CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n", "\r\n", "CSeq: 1 BYE\r\n\r\n"])
    return (
        f"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.2.3;branch=z9hG4bK{i}\r\n{info}{pad}"
        f"{name}:{space}{call_id}\r\n{tail}"
    ).encode()


def _deliveries(socks: list[socket.socket], sent: int) -> dict[bytes, list[int]]:
    got: dict[bytes, list[int]] = {}
    deadline = time.monotonic() + 5
    count = 0
    while count < sent and time.monotonic() < deadline:
        for index, sock in enumerate(socks):
            while True:
                try:
                    data = sock.recv(70000)
                except BlockingIOError:
                    break
                got.setdefault(data, []).append(index)
                count += 1
        time.sleep(0.005)
    return got


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_the_kernel_delivers_each_readable_datagram_to_its_owner(workers: int) -> None:
    # 2,000 datagrams wait unread: queues deeper than the server's default hold them
    socks, scanned = bind_steered("127.0.0.1:0", workers, receive_buffer=4 << 20)
    rng = random.Random(workers)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = socks[0].getsockname()[1]
        assert all(s.getsockname()[1] == port for s in socks)
        messages = list(dict.fromkeys(_message(rng, i) for i in range(2000)))
        for k, data in enumerate(messages):
            client.sendto(data, ("127.0.0.1", port))
            if k % 100 == 99:
                time.sleep(0.002)  # well inside the sockets' buffers
        got = _deliveries(socks, len(messages))
        readable = [m for m in messages if _readable(m, scanned)]
        assert len(messages) // 4 < len(readable) < len(messages) * 3 // 4  # the mix exercises both sides
        assert all(len(got.get(m, ())) == 1 for m in messages), "every datagram once"
        wrong = [
            (m[:120], got[m], owner_of(m, workers)) for m in readable if got[m] != [owner_of(m, workers)]
        ]
        assert not wrong, wrong[:3]
        # the unreadable ones were not all sent to one socket by a load past the datagram's end
        unreadable = {got[m][0] for m in messages if not _readable(m, scanned)}
        assert len(unreadable) >= 1
    finally:
        client.close()
        for s in socks:
            s.close()


def test_over_ipv6_too() -> None:
    try:
        socks, _ = bind_steered("[::1]:0", 2)
    except OSError:
        pytest.skip("no IPv6 loopback")
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        port = socks[0].getsockname()[1]
        messages = [
            f"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP [::1];branch=z9hG4bK{i}\r\n"
            f"Call-ID: {i}-abcdefghijklmnopq@h\r\nCSeq: 1 BYE\r\n\r\n".encode()
            for i in range(200)
        ]
        for data in messages:
            client.sendto(data, ("::1", port))
        got = _deliveries(socks, len(messages))
        assert all(got[m] == [owner_of(m, 2)] for m in messages)
        assert {got[m][0] for m in messages} == {0, 1}
    finally:
        client.close()
        for s in socks:
            s.close()


def test_call_ids_near_the_scans_limits() -> None:
    """The Call-ID line just inside and just past the scanned offsets; a datagram ending right
    after the value (the 42 bytes the program reads must be there)."""
    workers = 2
    socks, scanned = bind_steered("127.0.0.1:0", workers)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = socks[0].getsockname()[1]
        messages = []
        for i in range(64):
            for where in (scanned - 40, scanned - 1, scanned, scanned + 5):
                head = f"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK{i}\r\nX: "
                pad = "p" * (where - len(head) - 2)
                body = f"{head}{pad}\r\nCall-ID: {i}-abcdefghijklmn@host\r\nCSeq: 1 BYE\r\n\r\n"
                messages.append(body.encode())
            short = f"BYE sip:a@b SIP/2.0\r\nCall-ID: {i:04d}-0123456789abcdefghijklmnop\r\n"  # 42 bytes on
            messages.append(short.encode())
        for data in messages:
            client.sendto(data, ("127.0.0.1", port))
        got = _deliveries(socks, len(messages))
        for m in messages:
            assert len(got[m]) == 1
            if _readable(m, scanned):
                assert got[m] == [owner_of(m, workers)], m
        assert sum(_readable(m, scanned) for m in messages) >= 64 * 2
    finally:
        client.close()
        for s in socks:
            s.close()


def test_what_the_program_cannot_read_is_left_to_the_kernels_hash() -> None:
    """A datagram without a readable Call-ID is not pinned to one socket (a load past its end would
    return socket 0): from 16 source ports, they spread as the kernel hashes the addresses. Two
    kinds: a compact ``i:`` (the scan runs to the datagram's end), and a datagram that ends inside
    a Call-ID value (the value's loads would pass its end)."""
    socks, _ = bind_steered("127.0.0.1:0", 2)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    try:
        port = socks[0].getsockname()[1]
        compact, cut = [], []
        for k, client in enumerate(clients):
            data = f"BYE sip:a@b SIP/2.0\r\ni: {k}-0123456789abcdef@host\r\nCSeq: 1 BYE\r\n\r\n".encode()
            client.sendto(data, ("127.0.0.1", port))
            compact.append(data)
            data = f"BYE sip:a@b SIP/2.0\r\nX: {'p' * (38 - len(str(k)))}{k}\r\nCall-ID: 0123456789abcdefghij".encode()
            assert data.find(b"\nCall-ID") % BLOCK == BLOCK - 1  # its block is readable, the value is not
            client.sendto(data, ("127.0.0.1", port))
            cut.append(data)
        got = _deliveries(socks, len(compact) + len(cut))
        for messages in (compact, cut):
            assert all(len(got[m]) == 1 for m in messages)
            assert {got[m][0] for m in messages} == {0, 1}
    finally:
        for c in clients:
            c.close()
        for s in socks:
            s.close()


def test_an_address_another_socket_holds_is_refused() -> None:
    """No group forms on an address someone else holds, and a second server cannot join ours."""
    plain = bind_udp("127.0.0.1:0")
    try:
        with pytest.raises(ListenError):
            bind_steered(f"127.0.0.1:{plain.getsockname()[1]}", 2)
    finally:
        plain.close()
    socks, _ = bind_steered("127.0.0.1:0", 2)
    try:
        with pytest.raises(ListenError):
            bind_steered(f"127.0.0.1:{socks[0].getsockname()[1]}", 2)
    finally:
        for s in socks:
            s.close()


def test_the_program_fits_each_budget() -> None:
    for budget in BUDGETS:
        for workers in (2, 7, 64):
            assert len(program(workers, budget)) // 8 <= budget
    assert scanned_bytes() >= 800


def test_call_id_slot_by_length() -> None:
    """crc32 below 16 bytes; the first 16 and last 4 bytes from 16 to 31; the first 32 from 32."""
    assert call_id_slot(b"a" * 15, 7) == zlib.crc32(b"a" * 15) % 7
    short = b"0123456789abcdefXYZW"
    assert call_id_slot(short, 7) == fold(short[:16] + short[-4:]) % 7
    assert call_id_slot(short[:16], 7) == fold(short[:16] + short[12:16]) % 7
    long = bytes(range(65, 65 + 40))
    assert call_id_slot(long, 7) == fold(long[:32]) % 7
    assert call_id_slot(long[:32], 7) == call_id_slot(long[:32] + b"anything", 7)
    assert owner_of_call_id(long.decode(), 7) == call_id_slot(long, 7)
    assert owner_of_call_id("anything", 1) == 0


def test_fold_is_32_bit_arithmetic() -> None:
    """The words folded in u32 as the kernel does: w0 = 1 then four zero words is F^4 mod 2^32,
    then the finaliser."""
    h = pow(0x9E3779B1, 4, 2**32)
    h ^= h >> 15
    h = h * 0x85EBCA6B % 2**32
    assert fold(b"\0\0\0\1" + bytes(16)) == h ^ (h >> 13) == 0x03A33D7D
    assert fold(bytes(20)) == 0
    assert fold(b"\xff" * 32) == 0x9A537A55


@pytest.mark.parametrize(
    "shape",
    [
        lambda i: f"{i}-4242@127.0.0.1",
        lambda i: f"{random.getrandbits(128):032x}@10.0.0.1",
        lambda i: f"constant-prefix-{i:06d}",  # 16 to 31 bytes: the last 4 count
    ],
)
def test_owners_are_balanced(shape) -> None:  # type: ignore[no-untyped-def]
    for workers in (2, 3):
        counts = [0] * workers
        for i in range(1, 20001):
            counts[call_id_slot(shape(i).encode(), workers)] += 1
        assert min(counts) > 20000 / workers * 0.75, counts
