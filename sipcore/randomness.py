"""Random values from the OS drawn in blocks, never shared with a forked child.

Why: a branch or tag per message from ``secrets.token_hex`` is one getrandom() system call each;
cutting them from a block read once per 256 values keeps them as unpredictable (still the OS
CSPRNG: a peer that sees our branches cannot guess the next ones) at a fraction of the cost. A fork
copies a block into the child, and two workers handing out the same values would be wrong (equal
branches, equal nonce salts), so every block is dropped in the child at fork.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

_LIVE: weakref.WeakSet[BlockSource] = weakref.WeakSet()


class BlockSource:
    """Values of ``size`` random bytes, hex-encoded or raw, cut from blocks of ``per_block``."""

    def __init__(self, size: int, per_block: int = 256, read: Callable[[int], bytes] = os.urandom) -> None:
        self.size = size
        self.per_block = per_block
        self._read = read
        self._block = b""
        self._at = 0
        _LIVE.add(self)

    def take(self) -> bytes:
        at = self._at
        if at >= len(self._block):
            self._block, at = self._read(self.size * self.per_block), 0
        self._at = at + self.size
        return self._block[at : at + self.size]

    def take_hex(self) -> str:
        return self.take().hex()

    def drop(self) -> None:
        self._block, self._at = b"", 0


def _after_fork_in_child() -> None:
    for source in list(_LIVE):
        source.drop()


os.register_at_fork(after_in_child=_after_fork_in_child)
