"""Block-drawn random values: distinct, of the asked size, and never shared with a forked child."""

from __future__ import annotations

import os

from sipcore.message import MAGIC_COOKIE, new_branch, new_tag
from sipcore.randomness import BlockSource


def test_values_are_cut_from_blocks_read_once_per_block() -> None:
    reads: list[int] = []

    def read(n: int) -> bytes:
        reads.append(n)
        return os.urandom(n)

    source = BlockSource(8, per_block=4, read=read)
    values = [source.take() for _ in range(10)]
    assert all(len(v) == 8 for v in values) and len(set(values)) == 10
    assert reads == [32, 32, 32]


def test_branches_and_tags() -> None:
    branches = {new_branch() for _ in range(2000)}
    tags = {new_tag() for _ in range(2000)}
    assert len(branches) == 2000 and len(tags) == 2000
    assert all(b.startswith(MAGIC_COOKIE) and len(b) == len(MAGIC_COOKIE) + 16 for b in branches)
    assert all(len(t) == 12 for t in tags)


def test_a_forked_child_draws_its_own_values() -> None:
    new_branch()  # the parent holds a block now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next branch, exit without running the test framework's cleanup
        os.close(read)
        os.write(write, new_branch().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != new_branch()
