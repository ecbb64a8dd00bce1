"""server.group_commit: every request is followed by an fdatasync that began after it; a burst is
grouped; a retired descriptor is closed by the thread, never under its running fdatasync; failures are
reported, not raised; stop finishes what was asked.

The Python thread (`PyGroupCommit`, the reference) is checked with a fake disk that can hold an
fdatasync; the same cases on real descriptors then run on both it and the C thread
(`NativeGroupCommit`, server/_group_commit_c.c), which must give the same outcomes."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server import group_commit as gc_module
from server.group_commit import NativeGroupCommit, PyGroupCommit
from tests.extensions import require_extension

WAIT = 10.0


class Disk:
    """A fake fdatasync recording the calls; ``hold`` makes the next one block until released."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.synced = threading.Condition()
        self.errors: list[OSError] = []
        self.fail = False

    def fdatasync(self, fd: int) -> None:
        self.started.set()
        assert self.release.wait(WAIT)
        if self.fail:
            raise OSError(5, "Input/output error")
        os.fstat(fd)  # the descriptor is still open while it is synced
        with self.synced:
            self.calls.append(fd)
            self.synced.notify_all()

    def wait_calls(self, n: int) -> None:
        with self.synced:
            assert self.synced.wait_for(lambda: len(self.calls) >= n, WAIT), self.calls


def _closed(fd: int) -> bool:
    """``fd`` is no longer an open descriptor."""
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def test_a_burst_of_requests_is_grouped_and_the_last_one_is_covered(tmp_path: Path) -> None:
    disk = Disk()
    fd = os.open(tmp_path / "j", os.O_WRONLY | os.O_CREAT)
    commit = PyGroupCommit(disk.fdatasync, disk.errors.append, interval=0.05)
    try:
        disk.release.clear()
        commit.request(fd)
        assert disk.started.wait(WAIT)  # the first fdatasync runs (held)
        for _ in range(100):  # written meanwhile: one more fdatasync covers them all
            commit.request(fd)
        disk.release.set()
        disk.wait_calls(2)
        commit.stop()
        assert disk.calls == [fd, fd]  # 101 requests, 2 fdatasyncs, the second after the last request
        assert disk.errors == []
    finally:
        os.close(fd)


def test_a_retired_descriptor_is_closed_after_the_fdatasync_running_on_it(tmp_path: Path) -> None:
    disk = Disk()
    old = os.open(tmp_path / "old", os.O_WRONLY | os.O_CREAT)
    new = os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT)
    commit = PyGroupCommit(disk.fdatasync, disk.errors.append, interval=0.0)
    try:
        disk.release.clear()
        commit.request(old)
        assert disk.started.wait(WAIT)
        commit.retire(old)  # a compaction replaced the file while old is being synced
        commit.request(new)
        os.fstat(old)  # not closed under the running fdatasync
        disk.release.set()
        disk.wait_calls(2)
        commit.stop()
        assert disk.calls == [old, new]
        assert _closed(old), "the retired descriptor was left open"
    finally:
        os.close(new)


def test_a_failed_fdatasync_is_reported_and_the_thread_goes_on(tmp_path: Path) -> None:
    disk = Disk()
    fd = os.open(tmp_path / "j", os.O_WRONLY | os.O_CREAT)
    commit = PyGroupCommit(disk.fdatasync, disk.errors.append, interval=0.0)
    try:
        disk.fail = True
        commit.request(fd)
        for _ in range(1000):
            if disk.errors:
                break
            threading.Event().wait(0.01)
        assert [e.errno for e in disk.errors] == [5]
        disk.fail = False
        commit.request(fd)
        disk.wait_calls(1)
        commit.stop()
    finally:
        os.close(fd)


def test_stop_does_what_was_asked_before_it(tmp_path: Path) -> None:
    disk = Disk()
    fd = os.open(tmp_path / "j", os.O_WRONLY | os.O_CREAT)
    retired = os.open(tmp_path / "r", os.O_WRONLY | os.O_CREAT)
    commit = PyGroupCommit(disk.fdatasync, disk.errors.append, interval=1.0)
    try:
        commit.request(fd)
        commit.retire(retired)
        commit.request(fd)
        commit.stop()
        assert disk.calls and disk.calls[-1] == fd
        assert not commit._thread.is_alive()
        assert _closed(retired), "stop left a retired descriptor open"
    finally:
        os.close(fd)


# ---- the same cases on real descriptors, on both threads ---------------------------------------------


class Seen:
    """What a committer reported: each fdatasync's duration, each failure (thread-safe appends)."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self.errors: list[OSError] = []


def _python(seen: Seen, interval: float) -> PyGroupCommit:
    def fdatasync(fd: int) -> None:
        started = time.perf_counter()
        os.fdatasync(fd)
        seen.durations.append(time.perf_counter() - started)

    return PyGroupCommit(fdatasync, seen.errors.append, interval)


def _native(seen: Seen, interval: float) -> NativeGroupCommit:
    return NativeGroupCommit(seen.errors.append, seen.durations.append, interval)


def _implementations() -> list[Any]:
    return [pytest.param(_python, id="python"), pytest.param(_native, id="c")]


@pytest.fixture(params=_implementations())
def make(request: pytest.FixtureRequest) -> Callable[[Seen, float], Any]:
    if request.param is _native:
        require_extension(gc_module._native, "server._group_commit_c")
    return request.param  # type: ignore[no-any-return]


def test_a_burst_costs_one_or_two_fdatasyncs(make: Callable[[Seen, float], Any], tmp_path: Path) -> None:
    seen = Seen()
    fd = os.open(tmp_path / "j", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    commit = make(seen, 30.0)  # a long pause: the burst cannot span two
    try:
        for i in range(200):
            os.write(fd, b"frame %d\n" % i)
            commit.request(fd)
        commit.stop()  # cuts the pause short, syncs what is left
        assert 1 <= len(seen.durations) <= 2, seen.durations
        assert all(d >= 0 for d in seen.durations) and seen.errors == []
    finally:
        os.close(fd)


def test_retired_descriptors_are_closed_by_the_thread(
    make: Callable[[Seen, float], Any], tmp_path: Path
) -> None:
    seen = Seen()
    old = os.open(tmp_path / "old", os.O_WRONLY | os.O_CREAT)
    new = os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT)
    commit = make(seen, 0.0)
    try:
        commit.request(old)
        commit.retire(old)
        commit.request(new)
        commit.stop()
        assert _closed(old) and not _closed(new)
        assert 1 <= len(seen.durations) <= 2 and seen.errors == []
    finally:
        os.close(new)


def test_a_failure_is_reported_and_the_thread_goes_on(
    make: Callable[[Seen, float], Any], tmp_path: Path
) -> None:
    seen = Seen()
    read_end, write_end = os.pipe()  # fdatasync on a pipe: EINVAL
    fd = os.open(tmp_path / "j", os.O_WRONLY | os.O_CREAT)
    commit = make(seen, 0.0)
    try:
        deadline = time.monotonic() + WAIT
        while not seen.errors and time.monotonic() < deadline:
            commit.request(write_end)  # the C thread's news reach the caller at a request
            time.sleep(0.01)
        commit.request(fd)
        commit.stop()
        assert seen.errors and {e.errno for e in seen.errors} == {errno.EINVAL}, seen.errors
        assert seen.durations  # the good descriptor was synced after the failure
    finally:
        for d in (read_end, write_end, fd):
            os.close(d)


def test_stop_syncs_and_closes_what_was_asked(make: Callable[[Seen, float], Any], tmp_path: Path) -> None:
    seen = Seen()
    fd = os.open(tmp_path / "j", os.O_WRONLY | os.O_CREAT)
    retired = os.open(tmp_path / "r", os.O_WRONLY | os.O_CREAT)
    commit = make(seen, 30.0)
    try:
        commit.request(fd)
        commit.retire(retired)
        commit.request(fd)
        commit.stop()
        assert seen.durations and seen.errors == []
        assert _closed(retired)
        commit.stop()  # twice: nothing more to do
    finally:
        os.close(fd)


def test_the_journal_uses_the_c_thread_when_built(tmp_path: Path) -> None:
    require_extension(gc_module._native, "server._group_commit_c")
    seen = Seen()
    assert isinstance(gc_module.group_commit(seen.errors.append, seen.durations.append), NativeGroupCommit)
