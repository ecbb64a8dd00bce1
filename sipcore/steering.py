"""The kernel steers each datagram to the worker owning its Call-ID: classic BPF on SO_REUSEPORT.

Why: with one UDP socket shared by the workers, whoever is free reads a datagram, so with two workers
half the messages of a call land on the worker that does not own it and are handed over
(`server.worker_channel`): about three hand-offs per call, each a scan, a frame, a write and a
wake-up of the other process. With ``server.udp_steering`` the master binds one SO_REUSEPORT socket
per worker on each UDP address, in worker order, and attaches this program to the group; the kernel
runs it on every datagram and delivers it to the socket whose index it returns, which is
`sipcore.ownership.owner_of`'s answer for the Call-IDs it can read. What it cannot read (no
``\\nCall-ID:`` spelled so in its first 832 bytes, a compact ``i:``, the line too near the end) it
leaves to the kernel's own hash of the addresses; the worker that reads such a datagram hands it to
its owner as before, so steering only ever saves hand-offs, it never decides who handles a message.

The program (`program`), classic BPF, which has no loops, so everything is unrolled:

1. the scan: for each offset p, is the word at p ``"\\nCal"``? In blocks of 32 offsets, each block
   first checking the datagram is long enough for it (a load past the end would return socket 0);
2. at a hit: ``l-ID`` and ``:`` follow, then at most one space: the value starts (``vstart``);
3. its length class: a CR among value bytes 16..31 ends a short value (16 to 31 bytes): the hash
   reads its first 16 and its last 4 bytes; else the first 32 bytes (`ownership.fold`);
4. the hash modulo the number of workers is the socket's index.

A value shorter than 16 bytes is hashed by neither (its owner is ``crc32`` of it): the kernel's
choice may be wrong, and the reader hands it over. `tests/sipcore/test_steering.py` sends datagrams
through a real socket group and checks every delivery against `owner_of`.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

from sipcore.ownership import FOLD_MUL, MIX_MUL, STEER_LONG, STEER_SHORT
from sipcore.transport import DEFAULT_UDP_RECEIVE_BUFFER, ListenError, bind_udp, join_hostport, split_hostport

SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>
BPF_MAXINSNS = 4096
# Instructions tried in turn: 4,023 were refused (ENOMEM) by Linux 6.18 here, 3,891 taken; a
# smaller program scans less of the datagram
BUDGETS = (3700, 2000, 1000)

# classic BPF opcodes (<linux/filter.h>)
_LD, _LDX, _ST, _ALU, _JMP, _RET, _MISC = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07
_W, _B = 0x00, 0x10
_IMM, _ABS, _IND, _MEM, _LEN = 0x00, 0x20, 0x40, 0x60, 0x80
_ADD, _SUB, _MUL, _RSH, _MOD, _XOR = 0x00, 0x10, 0x20, 0x70, 0x90, 0xA0
_JA, _JEQ, _JGE = 0x00, 0x10, 0x30
_K, _X, _A = 0x00, 0x08, 0x10
_TAX, _TXA = 0x00, 0x80

NO_CHOICE = 0xFFFFFFFF  # an index past the group: the kernel falls back to its hash
_NL_CAL = int.from_bytes(b"\nCal", "big")
_L_ID = int.from_bytes(b"l-ID", "big")
BLOCK = 32  # scan offsets per length check (a conditional jump reaches 255 instructions ahead)
_POS = 15  # scratch word holding vstart (M[0..7] hold the value's words)
_REACH = 10 + STEER_LONG  # bytes from the "\n" to the end of a 32-byte value after one space


class _Asm:
    """Instructions with symbolic jump targets, resolved by `code`."""

    def __init__(self) -> None:
        self.ins: list[tuple[int, object, object, int]] = []  # (code, jt, jf, k); jumps by label
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int = 0, jt: object = 0, jf: object = 0) -> None:
        self.ins.append((code, jt, jf, k & 0xFFFFFFFF))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.ins)

    def code(self) -> bytes:
        out = []
        for i, (code, jt, jf, k) in enumerate(self.ins):
            if code == _JMP | _JA:
                k = self._offset(i, jt, limit=0xFFFFFFFF)
                jt = 0
            elif code & 0x07 == _JMP:
                jt, jf = self._offset(i, jt), self._offset(i, jf)
            out.append(struct.pack("=HBBI", code, jt, jf, k))
        return b"".join(out)

    def _offset(self, i: int, target: object, limit: int = 255) -> int:
        if isinstance(target, int):
            return target  # relative already
        off = self.labels[str(target)] - i - 1
        if not 0 <= off <= limit:
            raise ValueError(f"jump from {i} to {target} out of reach ({off})")
        return off


_COMMON = 240  # an upper bound of the instructions after the scan (checked by `program`)


def scanned_bytes(budget: int = BUDGETS[0]) -> int:
    """How far into a datagram a program of ``budget`` instructions looks for the Call-ID line
    (offsets of its "\\n")."""
    return (budget - _COMMON - 1) // (4 + 4 * BLOCK) * BLOCK


def program(workers: int, budget: int = BUDGETS[0]) -> bytes:
    """The steering program for a group of ``workers`` sockets, as ``struct sock_filter``s."""
    a = _Asm()
    blocks = scanned_bytes(budget) // BLOCK
    for b in range(blocks):
        start = b * BLOCK
        a.op(_LD | _W | _LEN)
        a.op(_JMP | _JGE | _K, start + BLOCK + 3, jt=1, jf=0)  # every word of the block readable
        a.op(_RET | _K, NO_CHOICE)
        for k in range(BLOCK):
            a.op(_LD | _W | _ABS, start + k)
            a.op(_JMP | _JEQ | _K, _NL_CAL, jt=f"hit{start + k}", jf=0)
        a.op(_JMP | _JA, jt=f"block{b + 1}")
        for k in range(BLOCK):
            a.label(f"hit{start + k}")
            a.op(_LDX | _W | _IMM, start + k)
            a.op(_JMP | _JA, jt="common")
        a.label(f"block{b + 1}")
    a.op(_RET | _K, NO_CHOICE)
    scan_end = len(a.ins)

    a.label("common")  # X: offset of "\nCall"
    a.op(_MISC | _TXA)
    a.op(_ALU | _ADD | _K, _REACH)
    a.op(_MISC | _TAX)
    a.op(_LD | _W | _LEN)
    a.op(_JMP | _JGE | _X, jt=1, jf=0)  # len >= p + reach: every load below is inside
    a.op(_RET | _K, NO_CHOICE)
    a.op(_MISC | _TXA)
    a.op(_ALU | _SUB | _K, _REACH)
    a.op(_MISC | _TAX)
    a.op(_LD | _W | _IND, 4)
    a.op(_JMP | _JEQ | _K, _L_ID, jt=1, jf=0)
    a.op(_RET | _K, NO_CHOICE)
    a.op(_LD | _B | _IND, 8)
    a.op(_JMP | _JEQ | _K, ord(":"), jt=1, jf=0)
    a.op(_RET | _K, NO_CHOICE)
    a.op(_LD | _B | _IND, 9)
    a.op(_JMP | _JEQ | _K, ord(" "), jt=0, jf=3)
    a.op(_MISC | _TXA)  # one space: the value starts a byte later
    a.op(_ALU | _ADD | _K, 1)
    a.op(_MISC | _TAX)
    a.op(_MISC | _TXA)
    a.op(_ALU | _ADD | _K, 9)
    a.op(_ST, _POS)
    a.op(_MISC | _TAX)  # X: vstart
    for k in range(STEER_SHORT, STEER_LONG):
        a.op(_LD | _B | _IND, k)
        a.op(_JMP | _JEQ | _K, ord("\r"), jt=f"short{k}", jf=0)
    # a long value: its first 8 words
    for i in range(8):
        a.op(_LD | _W | _IND, 4 * i)
        a.op(_ST, i)
    _fold(a, 8)
    a.op(_JMP | _JA, jt="finish")
    for k in range(STEER_SHORT, STEER_LONG):  # a short value of k bytes: X at its last word
        a.label(f"short{k}")
        a.op(_LD | _MEM, _POS)
        a.op(_ALU | _ADD | _K, k - 4)
        a.op(_MISC | _TAX)
        a.op(_JMP | _JA, jt="short")
    a.label("short")  # its first 4 words, then its last one
    a.op(_LD | _W | _IND, 0)
    a.op(_ST, 4)
    a.op(_LDX | _W | _MEM, _POS)
    for i in range(4):
        a.op(_LD | _W | _IND, 4 * i)
        a.op(_ST, i)
    _fold(a, 5)
    a.label("finish")  # A: h; the finaliser, then the index
    a.op(_ST, 0)
    a.op(_ALU | _RSH | _K, 15)
    a.op(_LDX | _W | _MEM, 0)
    a.op(_ALU | _XOR | _X)
    a.op(_ALU | _MUL | _K, MIX_MUL)
    a.op(_ST, 0)
    a.op(_ALU | _RSH | _K, 13)
    a.op(_LDX | _W | _MEM, 0)
    a.op(_ALU | _XOR | _X)
    a.op(_ALU | _MOD | _K, workers)
    a.op(_RET | _A)
    if len(a.ins) - scan_end > _COMMON or len(a.ins) > min(budget, BPF_MAXINSNS):
        raise AssertionError("the steering program outgrew its budget")
    return a.code()


def _fold(a: _Asm, words: int) -> None:
    """A := M[0], then A = A*F ^ M[i] for the next words (`ownership.fold` before its finaliser)."""
    a.op(_LD | _MEM, 0)
    for i in range(1, words):
        a.op(_ALU | _MUL | _K, FOLD_MUL)
        a.op(_LDX | _W | _MEM, i)
        a.op(_ALU | _XOR | _X)


def attach(sock: socket.socket, workers: int) -> int:
    """Attach the program to ``sock``'s SO_REUSEPORT group, the largest the kernel takes; returns
    the bytes it scans (raises OSError where none is taken)."""
    for budget in BUDGETS:
        code = program(workers, budget)
        buf = ctypes.create_string_buffer(code, len(code))
        fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
            return scanned_bytes(budget)
        except OSError as exc:
            if exc.errno != errno.ENOMEM or budget == BUDGETS[-1]:
                raise
    raise AssertionError("unreachable: the last budget returns or raises")


def bind_steered(
    text: str, workers: int, receive_buffer: int = DEFAULT_UDP_RECEIVE_BUFFER
) -> tuple[list[socket.socket], int]:
    """One SO_REUSEPORT socket per worker on ``text`` ('host:port'), index i for worker i, each with
    a receive queue of ``receive_buffer`` bytes and the steering program attached, and the bytes the
    program scans. First a plain bind of the address, closed at once: it fails if any other socket
    (another server) holds it, which a group would otherwise let join silently.
    Raises ListenError (the address is taken) or OSError (no steering here: the caller shares one
    socket instead)."""
    probe = bind_udp(text)  # ListenError if taken; without SO_REUSEPORT nobody can join it later
    host, port = split_hostport(text, 5060)
    if port == 0:  # any free port (tests): the one the probe got
        port = probe.getsockname()[1]
        text = join_hostport(host, port)
    probe.close()
    socks: list[socket.socket] = []
    try:
        for _ in range(workers):
            socks.append(bind_udp(text, reuse_port=True, receive_buffer=receive_buffer))
        scanned = attach(socks[0], workers)
    except BaseException as exc:
        for s in socks:
            s.close()
        if isinstance(exc, ListenError) and exc.errno != errno.EADDRINUSE:
            raise OSError(exc.errno, str(exc)) from None  # no group here: the caller shares one socket
        raise
    return socks, scanned
