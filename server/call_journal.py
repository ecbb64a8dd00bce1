"""The call journal: every answered call on disk until its CDR is durable, so a crash loses no call.

The proxy's adapter writes, per process, one append-only file of CRC'd msgpack frames
(``cdr.frames``) under ``<state_dir>/calls/``:

- ``A`` when a call is answered: its ``DialogRecord`` (the CDR's facts and the dialog's parties);
- ``E`` when it ends: its ``CallEnded`` (the real end time, who hung up);
- ``D`` once its CDR is durable in the CDR spool: the call is forgotten;
- ``H`` a heartbeat (wall clock) every second while calls are open: when the process was last alive.

``A`` and ``E`` frames are written (``write(2)``: in the kernel, which outlives a killed process)
before the replies of the same loop iteration leave (``sync``: the transports' barrier before each
batch of datagrams, and at once before a write on a TCP/TLS connection), so the 2xx of an INVITE and
the 200 of a BYE go out only once the call's record survives ``kill -9``. Against a power cut or a
kernel crash the file is fdatasync'd as well (``fsync``): ``reply`` before those replies leave (the
event loop waits for the disk), ``background`` (the default) in a thread of the journal's own,
grouped: at most one fdatasync every 10 ms (``server.group_commit``; the replies do not wait; the window
is those 10 ms plus one fdatasync, ``sipcore_call_journal_fdatasync_seconds``), ``off`` never. ``D`` frames need no fdatasync of their own: one lost in a power cut makes the
restart rebuild a CDR the store already holds (ignored by its key).

At start, before any worker runs, ``recover_journals`` reads every file: the calls still open and
those ended without a durable CDR are written, each to the file of the worker owning its Call-ID now
(the worker count may have changed), open calls with ``alive_until`` = the last sign of life of the
process that held them (its last heartbeat or record). Each process then ``open``s its own file and
gets them back (``Recovered``): the adapter restores the open calls as dialogs and re-sends the
ended ones to the CDR path (the CDR store keeps one row per (call_id, leg): a CDR that was durable
after all is not stored twice). The file is compacted (rewritten with the live frames only) when it
grows past ``compact_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import structlog
from prometheus_client import Counter, Histogram

from calls.call_ended import CallEnded
from calls.dialog_record import DialogRecord
from cdr.frames import FrameStop, decode_frames, encode_frame
from server.group_commit import NativeGroupCommit, PyGroupCommit, group_commit
from server.metrics import FastCounter, FastHistogram
from sipcore.ownership import owner_of_call_id

log = structlog.get_logger("sipcore.call_journal")

JOURNAL_DIR = "calls"
HEARTBEAT = 1.0  # seconds between two heartbeats while calls are open
COMPACT_BYTES = 4 << 20

# counted on the event loop (a write per loop iteration, two records per answered call): lock-free
# cells (server.metrics); the fdatasync figures and errors come from the group-commit thread too
SYNC_SECONDS = FastHistogram(
    "sipcore_call_journal_sync_seconds",
    "Call journal writes + fdatasync, each holding the replies of one loop iteration",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
)
FDATASYNC_SECONDS = Histogram(
    "sipcore_call_journal_fdatasync_seconds",
    "Call journal fdatasync calls (fsync: background: the window a power cut could lose)",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5),
)
FSYNC_MODES = ("reply", "background", "off")
RECORDS = FastCounter("sipcore_call_journal_records_total", "Call journal records written, by kind", ["kind"])
ERRORS = Counter("sipcore_call_journal_errors_total", "Call journal writes that failed (disk trouble)")
RESTORED = Counter(
    "sipcore_call_journal_restored_total",
    "Calls given back by the journal at start: open (restored as dialogs) or ended (CDR rebuilt)",
    ["state"],
)
_A, _E = RECORDS.labels("answered"), RECORDS.labels("ended")

_ENDED_FIELDS = tuple(f.name for f in dataclasses.fields(CallEnded))


def ended_to_wire(event: CallEnded) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _ENDED_FIELDS}


def ended_from_wire(wire: dict[str, Any]) -> CallEnded:
    """A journaled end, as a restarted process settles it: amounts it held against daily caps were
    the crashed process's (``holds``), gone with it."""
    if not isinstance(wire, dict) or "call_id" not in wire or "end" not in wire:
        raise ValueError("not a call-ended record")
    known = {k: v for k, v in wire.items() if k in _ENDED_FIELDS and k != "holds"}
    return CallEnded(**known)


def journal_dir(state_dir: str | Path) -> Path:
    """Where the journal files live: ``<state_dir>/calls``."""
    return Path(state_dir) / JOURNAL_DIR


def journal_path(directory: Path, index: int) -> Path:
    """The journal file of worker ``index`` (0 for a single process)."""
    return directory / f"calls-{index}.journal"


@dataclass
class Recovered:
    """What a process's journal gives back at start (wall clock)."""

    open: list[DialogRecord] = field(default_factory=list)  # answered, not ended: restore as dialogs
    ended: list[CallEnded] = field(default_factory=list)  # ended, CDR perhaps not durable: rebuild it


@dataclass
class _State:
    """The live frames of a journal, by Call-ID, and its last sign of life."""

    open: dict[str, list[Any]] = field(default_factory=dict)  # Call-ID -> DialogRecord wire
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)  # Call-ID -> CallEnded wire
    alive: float = 0.0

    def apply(self, entry: Any) -> None:
        kind = entry[0]
        if kind == "A":
            wire = entry[1]
            self.open[wire[1]] = wire
            self.alive = max(self.alive, float(wire[15]))
        elif kind == "E":
            wire = entry[1]
            self.open.pop(wire["call_id"], None)
            self.ended[wire["call_id"]] = wire
            self.alive = max(self.alive, float(wire["end"]))
        elif kind == "D":
            self.open.pop(entry[1], None)
            self.ended.pop(entry[1], None)
        elif kind == "H":
            self.alive = max(self.alive, float(entry[1]))


def _read(path: Path) -> _State:
    """Replay one file; a torn or corrupt tail (a crash mid-write) ends it, logged."""
    state = _State()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return state
    decoded = decode_frames(data)
    for payload in decoded.payloads:
        try:
            state.apply(msgpack.unpackb(payload))
        except Exception as exc:  # CRC-valid but unreadable: skip it, keep the rest
            log.error("call_journal_bad_record", path=str(path), error=repr(exc))
    if decoded.stop in (FrameStop.INCOMPLETE, FrameStop.CORRUPT):
        log.warning("call_journal_torn_tail", path=str(path), offset=decoded.consumed, size=len(data))
    return state


def _frame(entry: list[Any]) -> bytes:
    return encode_frame(msgpack.packb(entry, use_bin_type=True))


def _write_file(path: Path, frames: Iterable[bytes]) -> None:
    """Replace ``path`` atomically with ``frames`` (written, fsync'd, renamed, directory fsync'd)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(b"".join(frames))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_journals(directory: Path, workers: int) -> tuple[int, int]:
    """Run once before any process of the server serves (the master before forking, or the single
    process): every journal file read, what is live given to the owner of its Call-ID among
    ``workers``, one fresh file per worker; other files removed. Returns (open, ended) calls kept."""
    directory.mkdir(parents=True, exist_ok=True)
    files = sorted(directory.glob("calls-*.journal"))
    per_worker: list[list[bytes]] = [[] for _ in range(max(1, workers))]
    open_calls: dict[str, DialogRecord] = {}
    ended_calls: dict[str, dict[str, Any]] = {}
    for path in files:  # a call in two files (a recovery cut short): ended wins, else the latest
        state = _read(path)
        for call_id, wire in state.open.items():
            try:
                record = DialogRecord.from_wire(wire)
            except (ValueError, TypeError, KeyError) as exc:
                log.error("call_journal_bad_record", path=str(path), call_id=call_id, error=repr(exc))
                continue
            # alive_until: the last sign of life of the process that held it
            open_calls[call_id] = dataclasses.replace(
                record, alive_until=max(state.alive, record.alive_until or 0.0)
            )
        ended_calls.update(state.ended)
    for call_id in ended_calls:
        open_calls.pop(call_id, None)
    for call_id, record in open_calls.items():
        per_worker[owner_of_call_id(call_id, workers)].append(_frame(["A", record.to_wire()]))
    for call_id, end in ended_calls.items():
        per_worker[owner_of_call_id(call_id, workers)].append(_frame(["E", end]))
    opened, ended = len(open_calls), len(ended_calls)
    for index, frames in enumerate(per_worker):
        _write_file(journal_path(directory, index), frames)
    kept = {journal_path(directory, i) for i in range(len(per_worker))}
    for path in files:
        if path not in kept:
            path.unlink(missing_ok=True)
    if opened or ended:
        log.warning("call_journal_recovered", open=opened, ended=ended, files=len(files), workers=workers)
    return opened, ended


class CallJournal:
    """One process's journal file. Sync (no await): it is written from the message path, and its
    ``sync`` runs as the transports' barrier, before the replies it holds leave."""

    def __init__(
        self, path: Path, fsync: str = "background", compact_bytes: int = COMPACT_BYTES,
        heartbeat: float = HEARTBEAT,
    ) -> None:  # fmt: skip
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {FSYNC_MODES}, not {fsync!r}")
        self.path = path
        self.fsync = fsync
        self._committer: NativeGroupCommit | PyGroupCommit | None = (
            None  # background: the fdatasync thread, once open
        )
        self._sync_soon = False  # a sync is scheduled for the end of this loop iteration
        self.compact_bytes = compact_bytes
        self.heartbeat_interval = heartbeat
        self._fd: int | None = None
        self._size = 0
        self._buf: list[bytes] = []
        self._must_sync = False  # an A or E frame is buffered: fdatasync, not only write
        self._open: dict[str, bytes] = {}  # Call-ID -> its A frame
        self._ended: dict[str, bytes] = {}  # Call-ID -> its E frame, until its CDR is durable
        self._alive = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> Recovered:
        """Read what ``recover_journals`` left for this process and append from there."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = _read(self.path)
        recovered = Recovered()
        for call_id, wire in state.open.items():
            try:
                recovered.open.append(DialogRecord.from_wire(wire))
            except (ValueError, TypeError, KeyError) as exc:
                log.error("call_journal_bad_record", call_id=call_id, error=repr(exc))
                continue
            self._open[call_id] = _frame(["A", wire])
        for call_id, end in state.ended.items():
            try:
                recovered.ended.append(ended_from_wire(end))
            except (ValueError, TypeError, KeyError) as exc:
                log.error("call_journal_bad_record", call_id=call_id, error=repr(exc))
                continue
            self._ended[call_id] = _frame(["E", end])
        self._alive = state.alive
        self._rewrite()  # a clean file (no torn tail) holding just the live frames
        RESTORED.labels("open").inc(len(recovered.open))
        RESTORED.labels("ended").inc(len(recovered.ended))
        return recovered

    def close(self) -> None:
        """Write what is buffered, fdatasync it (unless ``off``); release the file."""
        self.sync()
        if self._committer is not None:
            self._committer.stop()  # its fdatasync done and the retired descriptors closed
            self._committer = None
        if self._fd is not None:
            if self.fsync != "off":
                with contextlib.suppress(OSError):
                    os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = None

    # ---- records -----------------------------------------------------------------------------------
    def answered(self, record: DialogRecord) -> None:
        """A call is answered (``record`` in wall-clock time)."""
        frame = _frame(["A", record.to_wire()])
        self._open[record.call_id] = frame
        self._buf.append(frame)
        self._must_sync = True
        _A.inc()

    def ended(self, event: CallEnded) -> None:
        """An answered call ended (wall-clock times); its CDR is on its way."""
        call_id = event.call_id
        if self._open.pop(call_id, None) is None and call_id not in self._ended:
            return  # not journaled (answered before the journal was on): nothing to close
        frame = _frame(["E", ended_to_wire(event)])
        self._ended[call_id] = frame
        self._buf.append(frame)
        self._must_sync = True
        _E.inc()

    def done(self, call_id: str) -> None:
        """The call's CDR is durable: forget it (written at the end of this loop iteration)."""
        if self._ended.pop(call_id, None) is not None or self._open.pop(call_id, None) is not None:
            self._buf.append(_frame(["D", call_id]))
            if not self._sync_soon:
                try:
                    asyncio.get_running_loop().call_soon(self._sync_now)
                    self._sync_soon = True
                except RuntimeError:  # no loop: with the next sync
                    pass

    def _sync_now(self) -> None:
        self._sync_soon = False
        self.sync()

    def heartbeat(self, now: float) -> None:
        """A sign of life while calls are open (wall clock): an orphan's end is estimated from it."""
        if self._open:
            self._buf.append(_frame(["H", now]))
            self._must_sync = True
            self._alive = now
        self.sync()

    @property
    def dirty(self) -> bool:
        """Frames are waiting that replies depend on."""
        return self._must_sync

    @property
    def open_calls(self) -> int:
        return len(self._open)

    # ---- the disk ----------------------------------------------------------------------------------
    def sync(self) -> None:
        """Write the buffered frames (fdatasync'd when an A, E or H frame is among them); compact
        when the file has grown. Never raises: a disk failure is logged and counted, the replies go."""
        if not self._buf or self._fd is None:
            return
        started = time.perf_counter()
        data = b"".join(self._buf)
        self._buf.clear()
        must_sync, self._must_sync = self._must_sync, False
        try:
            view = memoryview(data)
            while view:
                # a name, not the call, as the slice's start: mypyc's build evaluates a call there
                # twice (tests/sipcore/test_compiled_sources.py), and wrote every frame twice
                written = os.write(self._fd, view)
                view = view[written:]
            if must_sync and self.fsync == "reply":
                self._fdatasync(self._fd)
            elif must_sync and self.fsync == "background":
                self._fdatasync_soon()
            self._size += len(data)
            if self._size > self.compact_bytes:
                self._rewrite()
        except OSError as exc:
            ERRORS.inc()
            log.error("call_journal_write_failed", path=str(self.path), error=str(exc))
        SYNC_SECONDS.observe(time.perf_counter() - started)

    @staticmethod
    def _fdatasync(fd: int) -> None:
        started = time.perf_counter()
        os.fdatasync(fd)
        FDATASYNC_SECONDS.observe(time.perf_counter() - started)

    def _fdatasync_soon(self) -> None:
        """fdatasync in the journal's own thread, grouped (server.group_commit)."""
        if self._committer is None:
            self._committer = group_commit(
                self._fdatasync_failed, FDATASYNC_SECONDS.observe, name="call-journal-sync"
            )
        self._committer.request(self._fd)  # type: ignore[arg-type]

    def _fdatasync_failed(self, exc: OSError) -> None:
        ERRORS.inc()
        log.error("call_journal_fdatasync_failed", path=str(self.path), error=str(exc))

    def _rewrite(self) -> None:
        """Replace the file with the live frames only (atomically), and append to it from now on."""
        frames = [*self._open.values(), *self._ended.values()]
        if self._alive:
            frames.append(_frame(["H", self._alive]))
        _write_file(self.path, frames)  # fsync'd: what the old file held that matters is in it
        if self._fd is not None:
            if self._committer is not None:
                self._committer.retire(self._fd)  # closed by its thread, never under its fdatasync
            else:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = sum(len(f) for f in frames)
