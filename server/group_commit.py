"""fdatasync of one append-only file in a thread of its own, grouped: at most one every ``interval``.

Why a thread of its own and not the loop's executor: on the call path the journal asks for an
fdatasync after almost every loop iteration (an answer, a hang-up). Through ``run_in_executor`` each
one woke an executor thread, took the GIL from the event loop and woke the loop again to report
back: at 400 calls/s that was ~0.3 ms of server CPU per call on the wire (1.54–1.59 against 1.24 ms
with ``fsync: off``, benchmarks/bench_call.py ``--journal-fsync``), ten times what the journal's own
writes cost. Here the loop only sets a flag (and wakes the thread when it sleeps); the thread
fdatasyncs whatever was written since the last one, then waits ``interval`` before the next, so a
burst of writes costs one fdatasync and the thread wakes at most 1/``interval`` times a second; it
never calls back into the loop. The price is the window a power cut can lose: what was written in
the last ``interval`` plus one fdatasync (PostgreSQL's asynchronous commit makes the same trade with
``wal_writer_delay``, 200 ms by default). A killed process loses nothing either way: the bytes are
in the kernel once ``write(2)`` returned.

Descriptors the file's owner replaces (a compaction renames a new file over the old) are handed
over with ``retire`` and closed by the thread, never while its fdatasync runs on them.

The thread is C when built (server/_group_commit_c.c, `NativeGroupCommit`): a Python thread waking
~100 times a second made every GIL-releasing system call of the loop's thread dearer (a journal
write 1 -> 8-10 µs), 0.11-0.15 ms of CPU per call on the wire. `PyGroupCommit` is the reference;
`group_commit` picks one. tests/server/test_group_commit.py holds both to the same cases.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

from sipcore.speedups import optional_extension

_native = optional_extension("server._group_commit_c")

INTERVAL = 0.01  # seconds between two fdatasyncs of one file, at most
STOP_TIMEOUT = 5.0


class PyGroupCommit:
    """One file's background fdatasync. ``request``/``retire`` are called from the event loop;
    ``observe(seconds)`` and ``failed(error)`` from the thread (both must be thread-safe)."""

    def __init__(
        self,
        fdatasync: Callable[[int], None],
        failed: Callable[[OSError], None],
        interval: float = INTERVAL,
        name: str = "fdatasync",
    ) -> None:
        self._fdatasync = fdatasync
        self._failed = failed
        self.interval = interval
        self._cond = threading.Condition(threading.Lock())
        self._fd: int | None = None  # the descriptor to fdatasync next, when wanted
        self._wanted = False
        self._retired: list[int] = []
        self._stopping = False
        self._waiting = False  # the thread waits on the condition: a request must notify it
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def request(self, fd: int) -> None:
        """Make what was written to ``fd`` so far durable, soon (within ``interval`` + one fdatasync)."""
        with self._cond:
            self._fd = fd
            self._wanted = True
            if self._waiting:
                self._cond.notify()

    def retire(self, fd: int) -> None:
        """``fd`` is no longer written to: close it (after the fdatasync running on it, if any)."""
        with self._cond:
            self._retired.append(fd)
            if self._fd == fd:
                self._fd, self._wanted = None, False
            if self._waiting:
                self._cond.notify()

    def stop(self) -> None:
        """End the thread once it has done what was asked (bounded); closes the retired descriptors."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(STOP_TIMEOUT)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._wanted or self._retired or self._stopping):
                    self._waiting = True
                    self._cond.wait()
                    self._waiting = False
                fd = self._fd if self._wanted else None
                self._wanted = False
                retired, self._retired = self._retired, []
                stopping = self._stopping
            started = time.monotonic()
            if fd is not None:
                try:
                    self._fdatasync(fd)
                except OSError as exc:
                    self._failed(exc)
            for old in retired:
                with contextlib.suppress(OSError):
                    os.close(old)
            if stopping:
                with self._cond:
                    if not (self._wanted or self._retired):
                        return
                continue
            pause = self.interval - (time.monotonic() - started)
            if pause > 0:  # writes meanwhile are grouped into the next fdatasync; stop cuts it short
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(pause)


class NativeGroupCommit:
    """`PyGroupCommit` with its thread in C (no GIL). What the thread observed (each fdatasync's
    duration, each failure) reaches ``observe`` and ``failed`` on the caller's thread, at the next
    ``request`` or at ``stop``."""

    def __init__(
        self,
        failed: Callable[[OSError], None],
        observe: Callable[[float], None],
        interval: float = INTERVAL,
    ) -> None:
        assert _native is not None
        self._failed = failed
        self._observe = observe
        self._committer = _native.Committer(interval)

    def request(self, fd: int) -> None:
        """Make what was written to ``fd`` so far durable, soon (within ``interval`` + one fdatasync)."""
        if self._committer.request(fd):
            self._report()

    def retire(self, fd: int) -> None:
        """``fd`` is no longer written to: close it (after the fdatasync running on it, if any)."""
        self._committer.retire(fd)

    def stop(self) -> None:
        """End the thread once it has done what was asked (bounded); closes the retired descriptors."""
        self._committer.stop(STOP_TIMEOUT)
        self._report()

    def _report(self) -> None:
        durations, errnos = self._committer.news()
        for seconds in durations:
            self._observe(seconds)
        for number in errnos:
            self._failed(OSError(number, os.strerror(number)))


def group_commit(
    failed: Callable[[OSError], None],
    observe: Callable[[float], None],
    interval: float = INTERVAL,
    name: str = "fdatasync",
) -> NativeGroupCommit | PyGroupCommit:
    """One file's background fdatasync: the C thread when built, else the Python one; ``observe``
    gets each fdatasync's duration in seconds, ``failed`` each failure."""
    if _native is not None:
        return NativeGroupCommit(failed, observe, interval)

    def fdatasync(fd: int) -> None:
        started = time.perf_counter()
        os.fdatasync(fd)
        observe(time.perf_counter() - started)

    return PyGroupCommit(fdatasync, failed, interval, name)
