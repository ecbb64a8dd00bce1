"""Seeded edits of SIP messages, shared by the tests that drive bad input through the stack:
mutated traffic through a live server (tests/server/test_mutated_traffic.py) and the mypyc build
against its sources (tests/sipcore/test_message_compiled.py)."""

from __future__ import annotations

import random

_HUGE = [b"99999999999999999999999", b"-1", b"4294967296", b"1" * 300, b"x" * 4000, b"0" * 70]
_HOSTS = [b"127.0", b"127.y.0.1", b"12", b"[::1", b"a..b", b"256.256.256.256", b"-x-", b"[fe80::1%eth0]", b""]
_BYTES = [
    b"\x00",
    b"\xff",
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"@",
    b"=",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three random edits of ``data``."""
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["flip", "flip", "truncate", "repeat", "huge", "host", "insert", "random"])
        n = len(data)
        if kind == "flip" and n:
            i = rng.randrange(n)
            data = data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
        elif kind == "truncate" and n:
            data = data[: rng.randrange(n)]
        elif kind == "repeat":  # a header line duplicated, identical or with another value
            lines = data.split(b"\r\n")
            if len(lines) > 2:
                i = rng.randrange(1, len(lines) - 1)
                copy = lines[i] if rng.random() < 0.5 else lines[i] + b"x"
                lines.insert(rng.randrange(1, len(lines)), copy)
                data = b"\r\n".join(lines)
        elif kind == "huge":  # a number or a value replaced by an extreme one
            digits = [i for i in range(n) if 48 <= data[i] <= 57]
            if digits:
                i = rng.choice(digits)
                j = i
                while j < n and 48 <= data[j] <= 57:
                    j += 1
                data = data[:i] + rng.choice(_HUGE) + data[j:]
        elif kind == "host":  # the host of a URI or Via replaced by a malformed one
            for marker in (b"@", b"UDP ", b"sip:"):
                i = data.find(marker, rng.randrange(max(n, 1)) // 2)
                if i >= 0:
                    i += len(marker)
                    j = i
                    while j < n and data[j : j + 1] not in b";:>\r\n ":
                        j += 1
                    data = data[:i] + rng.choice(_HOSTS) + data[j:]
                    break
        elif kind == "insert":
            i = rng.randrange(n + 1)
            data = data[:i] + rng.choice(_BYTES) * rng.choice([1, 1, 2, 100]) + data[i:]
        else:
            i = rng.randrange(n + 1)
            data = data[:i] + rng.randbytes(rng.randint(1, 64)) + data[i:]
    return data
