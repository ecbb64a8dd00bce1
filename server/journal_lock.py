"""One server per state directory: the lock its call journals live under (``server.call_journal``).

Apart from the journal because it raises its own ``RuntimeError``: the journal is compiled by mypyc
(setup.py), which does not build a class derived from a built-in type.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class JournalInUse(RuntimeError):
    """Another server runs on this state directory."""


def lock_journals(directory: Path) -> int:
    """Hold ``<directory>/LOCK`` (flock) for as long as the returned descriptor stays open: one
    server per state directory (a second one would rewrite the first one's journals under it)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalInUse(f"{directory} is in use by another server (its call journals)") from None
    return fd
