"""server.group_commit: every request is followed by an fdatasync that began after it; a burst is
grouped; a retired descriptor is closed by the thread, never under its running fdatasync; failures are
reported, not raised; stop finishes what was asked."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from server.group_commit import GroupCommit

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


def test_a_burst_of_requests_is_grouped_and_the_last_one_is_covered(tmp_path: Path) -> None:
    disk = Disk()
    fd = os.open(tmp_path / "j", os.O_WRONLY | os.O_CREAT)
    commit = GroupCommit(disk.fdatasync, disk.errors.append, interval=0.05)
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
    commit = GroupCommit(disk.fdatasync, disk.errors.append, interval=0.0)
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
        try:
            os.fstat(old)
        except OSError:
            pass
        else:
            raise AssertionError("the retired descriptor was left open")
    finally:
        os.close(new)


def test_a_failed_fdatasync_is_reported_and_the_thread_goes_on(tmp_path: Path) -> None:
    disk = Disk()
    fd = os.open(tmp_path / "j", os.O_WRONLY | os.O_CREAT)
    commit = GroupCommit(disk.fdatasync, disk.errors.append, interval=0.0)
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
    commit = GroupCommit(disk.fdatasync, disk.errors.append, interval=1.0)
    try:
        commit.request(fd)
        commit.retire(retired)
        commit.request(fd)
        commit.stop()
        assert disk.calls and disk.calls[-1] == fd
        assert not commit._thread.is_alive()
        try:
            os.fstat(retired)
        except OSError:
            pass
        else:
            raise AssertionError("stop left a retired descriptor open")
    finally:
        os.close(fd)
