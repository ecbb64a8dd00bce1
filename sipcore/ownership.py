"""Which worker process owns a SIP message, from its raw bytes (several workers reading one socket).

Every message of a call must reach the one process holding its transactions and dialog state, and
every REGISTER of an address of record the one process writing it. The owner is decided before any
parsing, with a cheap scan of the header section: `call_id_slot` of the Call-ID, except REGISTER
requests, owned by ``crc32`` of the To-URI user part (one writer per AOR, whatever Call-ID the phone
uses). Both are stable across processes (``hash()`` is salted per process). Anything without a
usable key (no Call-ID) belongs to whoever read it: the parser answers it with a 400 there.

A Call-ID of 16 bytes or more is owned by a hash of its first 32 or 16 bytes (`call_id_slot`), which
the kernel computes too when it steers datagrams to the workers' sockets (`sipcore.steering`:
classic BPF has no loops, so it reads a fixed number of bytes); a shorter one by ``crc32``.

TCP connection ids carry the index of the worker holding the connection ("w1-tcp-7"), so any worker
knows where to hand a write for that flow.
"""

from __future__ import annotations

import re
import struct
import zlib
from urllib.parse import unquote_to_bytes

from .speedups import optional_extension

_c = optional_extension("sipcore._ownership_c")
_c_owner = _c.owner if _c is not None else None  # None: owner_py alone (not built, or turned off)

# A header line's name at a line start (compact form too), then its value with any folded
# continuation lines (CRLF or LF followed by a space or tab).
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:((?:[^\r\n]|\r?\n[ \t])*)", re.IGNORECASE | re.MULTILINE)
_TO = re.compile(rb"^(?:to|t)[ \t]*:((?:[^\r\n]|\r?\n[ \t])*)", re.IGNORECASE | re.MULTILINE)


def _header_end(data: bytes) -> int:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    return len(data) if end < 0 else end


def _value(pattern: re.Pattern[bytes], canonical: bytes, data: bytes, end: int) -> bytes | None:
    # Fast path: the usual spelling ("\r\nCall-ID: ...") on one line. Another header of the same
    # name earlier in other case or compact form would make the message invalid (two Call-IDs); it
    # still gets one deterministic owner, and its 400 there.
    pos = data.find(canonical, 0, end)
    if pos >= 0:
        start = pos + len(canonical)
        stop = data.find(b"\n", start, end + 2)
        if stop > 0 and data[stop + 1 : stop + 2] not in (b" ", b"\t"):
            value = data[start:stop].strip()
            if value and b"  " not in value and b"\t" not in value and b"\r" not in value:
                return value
    m = pattern.search(data, 0, end)
    if m is None:
        return None
    value = m.group(1)
    if b"\n" in value or b"\t" in value or b"  " in value:
        value = b" ".join(value.split())  # unfold, collapse linear whitespace
    value = value.strip()
    return value or None


def call_id_of(data: bytes) -> bytes | None:
    """The Call-ID value (unfolded, trimmed), or None when the header section has none."""
    return _value(_CALL_ID, b"\nCall-ID:", data, _header_end(data))


def to_user_of(data: bytes) -> bytes | None:
    """The user part of the To URI (percent-decoded), or the whole URI when it has no user part."""
    value = _value(_TO, b"\nTo:", data, _header_end(data))
    if value is None:
        return None
    lt = value.find(b"<", _after_display_name(value))
    if lt >= 0:
        gt = value.find(b">", lt)
        uri = value[lt + 1 : gt if gt > 0 else len(value)]
    else:
        uri = value.split(b";", 1)[0]  # addr-spec form: the parameters are the header's
    colon = uri.find(b":")
    rest = uri[colon + 1 :] if colon >= 0 else uri
    at = rest.find(b"@")
    if at < 0:
        return uri.strip() or None
    user = rest[:at]
    return unquote_to_bytes(user) if b"%" in user else user


def _after_display_name(value: bytes) -> int:
    """Where to look for "<": past a quoted display name (which may itself hold "<" or "@")."""
    if not value.startswith(b'"'):
        return 0
    i, n = 1, len(value)
    while i < n:
        c = value[i]
        if c == 0x5C:  # backslash: quoted pair
            i += 2
            continue
        if c == 0x22:
            return i + 1
        i += 1
    return 0


STEER_SHORT, STEER_LONG = 16, 32  # Call-ID lengths `call_id_slot` tells apart
FOLD_MUL = 0x9E3779B1  # odd multipliers (golden ratio; murmur3's finaliser) spread every byte
MIX_MUL = 0x85EBCA6B
_MASK = 0xFFFFFFFF
_WORDS = {5: struct.Struct(">5I"), 8: struct.Struct(">8I")}


def fold(data: bytes) -> int:
    """A 32-bit hash of ``data`` (20 or 32 bytes) read as big-endian 32-bit words, in unsigned
    32-bit arithmetic, step for step what `sipcore.steering`'s program computes: h = w0, then
    h = h*F ^ w for each next word; h ^= h >> 15; h *= M; h ^= h >> 13."""
    first, *rest = _WORDS[len(data) // 4].unpack(data)
    h = first
    for w in rest:
        h = (h * FOLD_MUL & _MASK) ^ w
    h ^= h >> 15
    h = h * MIX_MUL & _MASK
    return h ^ (h >> 13)


def call_id_slot(key: bytes, workers: int) -> int:
    """The worker owning Call-ID ``key`` (its bytes as sent), modulo ``workers``: `fold` of its
    first 32 bytes; of a value of 16 to 31 bytes, `fold` of its first 16 and last 4 (a constant
    prefix, a counter at the end); ``crc32`` of a shorter one. SIPp's Call-IDs have 17 bytes. (The
    everyday message is hashed in C, sipcore/_ownership_c.c: this is its reference.)"""
    n = len(key)
    if n >= STEER_LONG:
        return fold(key[:STEER_LONG]) % workers
    if n >= STEER_SHORT:
        return fold(key[:STEER_SHORT] + key[-4:]) % workers
    return zlib.crc32(key) % workers


def owner_of(data: bytes, workers: int) -> int | None:
    """Index of the worker that must handle ``data``; None: no key, handle it where it was read. The
    everyday message is decided by sipcore/_ownership_c.c, the rest by `owner_py`."""
    if workers <= 1:
        return 0
    if _c_owner is not None and type(data) is bytes:
        slot: int = _c_owner(data, workers)
        if slot >= 0:
            return slot
    return owner_py(data, workers)


def owner_py(data: bytes, workers: int) -> int | None:
    """`owner_of` in Python: the reference the C reader is held to."""
    if workers <= 1:
        return 0
    if data.startswith(b"REGISTER "):
        user = to_user_of(data)
        if user is not None:
            return zlib.crc32(user) % workers
    key = call_id_of(data)
    if key is None:
        return None
    return call_id_slot(key, workers)


def conn_prefix(worker: int) -> str:
    """Prefix of the TCP connection ids worker ``worker`` hands out."""
    return f"w{worker}-tcp-"


def worker_of_conn(conn_id: str | None) -> int | None:
    """The worker holding connection ``conn_id`` (see `conn_prefix`); None if it names none."""
    if not conn_id or conn_id[0] != "w":
        return None
    index, sep, _ = conn_id[1:].partition("-")
    return int(index) if sep and index.isdigit() else None


def owner_of_call_id(call_id: str, workers: int) -> int:
    """The worker owning the messages of ``call_id`` (as `owner_of` decides it from the bytes)."""
    # the parser keeps bytes that are not UTF-8 as surrogates: encoded back, they are the bytes sent
    return 0 if workers <= 1 else call_id_slot(call_id.encode("utf-8", "surrogateescape"), workers)
