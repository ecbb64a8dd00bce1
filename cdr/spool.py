"""Durable local spool of finished calls' CDRs: append-only segment files of CRC'd msgpack frames.

Guarantee: ``append()`` only buffers in memory (cheap, never touches the disk, safe from any thread).
A CDR is durable once a ``flush()`` that started after its ``append()`` has returned: the frames
are written and fsync'd. The pipeline flushes every few tens of milliseconds, so a crash loses at
most the CDRs appended since the last flush. A single reader (the store writer) takes durable frames
in order and ``ack()``s a position once the store holds them; a restart resumes from the last ack,
so anything not acknowledged is replayed (the store ignores keys it already has).

Layout of the directory: ``NNNNNNNNNNNN.seg`` segment files, ``ack`` (``"<segment> <offset>"``,
replaced atomically) and ``LOCK`` (flock: one process per spool). Every open starts a fresh
segment, so a torn tail left by a crash stays at the end of an old, closed segment, where the
reader detects it (incomplete frame or bad CRC), logs it and moves on.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import msgpack
import structlog

from cdr.frames import FrameStop, decode_frames, encode_frame
from cdr.metrics import CdrMetrics
from cdr.record import CdrRecord, record_to_wire

log = structlog.get_logger("sipcore.cdr.spool")

SEGMENT_SUFFIX = ".seg"
READ_CHUNK = 4 << 20


class SpoolError(Exception):
    """A spool problem, with the file and offset at fault."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}:{offset}: {reason}")
        self.path, self.offset, self.reason = path, offset, reason


@dataclass(frozen=True, order=True, slots=True)
class SpoolPosition:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """Payloads read in order; ``ack(end)`` once the store holds them."""

    payloads: list[bytes]
    end: SpoolPosition


class Spool:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_bytes: int = 32 << 20,
        metrics: CdrMetrics | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self.metrics = metrics
        self._lock = threading.Lock()  # guards _active, _durable_end, _sizes
        self._flush_lock = threading.Lock()  # one flush at a time
        self._gauge_lock = threading.Lock()
        self._buf: deque[bytes] = deque()
        if metrics is not None:
            metrics.buffered.set_function(lambda: len(self._buf))
        self._file = None
        self._lockfd: int | None = None
        self._active = 1
        self._durable_end = 0
        self._sizes: dict[int, int] = {}  # closed segments -> size
        self._acked = SpoolPosition(0, 0)
        self._read_pos = SpoolPosition(0, 0)

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise SpoolError(self.dir / "LOCK", 0, "spool is in use by another process") from exc
        self._lockfd = fd
        self._acked = self._load_ack()
        existing = self._segments()
        for seg in [s for s in existing if s < self._acked.segment]:
            self._seg_path(seg).unlink()
        existing = [s for s in existing if s >= self._acked.segment]
        self._sizes = {s: self._seg_path(s).stat().st_size for s in existing}
        self._active = max([*existing, self._acked.segment - 1, 0]) + 1
        if self._acked.segment in self._sizes or self._acked.segment == self._active:
            self._read_pos = self._acked
        else:  # ack points at a segment that is gone: resume at the next one
            nxt = min([s for s in existing if s > self._acked.segment], default=self._active)
            self._read_pos = SpoolPosition(nxt, 0)
        self._open_active()
        self._update_backlog()
        log.info("spool_opened", dir=str(self.dir), ack=str(self._acked), segments=len(existing))

    def close(self) -> None:
        """Flush what is buffered and release the directory."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None
        if self._lockfd is not None:
            os.close(self._lockfd)
            self._lockfd = None

    # -- write side ------------------------------------------------------------------------------
    def append(self, record: CdrRecord) -> None:
        """Buffer one CDR (not yet durable: see the module docstring)."""
        self.append_payload(msgpack.packb(record_to_wire(record)))

    def append_payload(self, payload: bytes) -> None:
        # deque.append is atomic: no lock and no metric update on the call path.
        self._buf.append(encode_frame(payload))

    @property
    def buffered(self) -> int:
        """CDRs appended but not yet durable."""
        return len(self._buf)

    def flush(self) -> int:
        """Write and fsync every buffered frame; return how many became durable. Blocking."""
        with self._flush_lock:
            buf = self._buf
            frames = [buf.popleft() for _ in range(len(buf))]  # appends may go on meanwhile
            if not frames:
                return 0
            data = b"".join(frames)
            f = self._file
            if f is None:
                raise SpoolError(self.dir, 0, "spool is not open")
            try:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                # Drop any partial write so later frames do not follow a torn one; keep the frames.
                f.truncate(self._durable_end)
                f.seek(self._durable_end)
                self._buf.extendleft(reversed(frames))
                raise
            with self._lock:
                self._durable_end += len(data)
                rotate = self._durable_end >= self.segment_bytes
            if rotate:
                self._rotate()
            if self.metrics is not None:
                self.metrics.fsyncs.inc()
                self.metrics.spooled.inc(len(frames))
            self._update_backlog()
            return len(frames)

    # -- read side (single reader) ---------------------------------------------------------------
    def read_batch(self, max_records: int) -> SpoolBatch:
        """Up to `max_records` durable payloads after the last read, in append order. Blocking."""
        out: list[bytes] = []
        seg, off = self._read_pos.segment, self._read_pos.offset
        big = False
        while len(out) < max_records:
            with self._lock:
                active, durable = self._active, self._durable_end
            path = self._seg_path(seg)
            if seg == active:
                want = min(durable - off, READ_CHUNK)
                if want <= 0:
                    break
            else:
                want = READ_CHUNK
            # Read about what the batch needs (~2x a typical frame); the whole chunk after a frame
            # larger than that came back incomplete.
            want = min(want, READ_CHUNK if big else max(1 << 16, (max_records - len(out)) * 512))
            try:
                with open(path, "rb") as fh:
                    fh.seek(off)
                    data = fh.read(want)
            except FileNotFoundError:
                if seg >= active:
                    break
                seg, off = self._next_segment(seg), 0
                continue
            dec = decode_frames(data, max_records - len(out))
            out.extend(dec.payloads)
            off += dec.consumed
            at_eof = len(data) < want
            big = dec.stop is FrameStop.INCOMPLETE and not at_eof and dec.consumed == 0
            if dec.stop is FrameStop.CORRUPT or (dec.stop is FrameStop.INCOMPLETE and at_eof):
                if seg == active:
                    raise SpoolError(path, off, f"{dec.stop.value} frame in the active segment")
                log.warning("spool_bad_tail_skipped", path=str(path), offset=off, reason=dec.stop.value)
                if self.metrics is not None:
                    self.metrics.bad_frames.inc()
                seg, off = self._next_segment(seg), 0
            elif dec.stop is FrameStop.END and at_eof:
                if seg == active:
                    break
                seg, off = self._next_segment(seg), 0
            elif dec.stop is FrameStop.LIMIT:
                break
        self._read_pos = SpoolPosition(seg, off)
        return SpoolBatch(out, self._read_pos)

    def ack(self, position: SpoolPosition) -> None:
        """Record that the store holds everything before `position`; drop finished segments."""
        tmp = self.dir / "ack.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{position.segment} {position.offset}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / "ack")
        self._acked = position
        with self._lock:
            done = [s for s in self._sizes if s < position.segment]
            for s in done:
                del self._sizes[s]
        for s in done:
            self._seg_path(s).unlink(missing_ok=True)
        self._update_backlog()

    def reject(self, payload: bytes, *, reason: str) -> None:
        """Set aside a CRC-valid frame that cannot be decoded (``rejected.frames``), never drop it."""
        with open(self.dir / "rejected.frames", "ab") as fh:
            fh.write(encode_frame(payload))
            fh.flush()
            os.fsync(fh.fileno())
        log.error("spool_frame_rejected", dir=str(self.dir), reason=reason)
        if self.metrics is not None:
            self.metrics.bad_frames.inc()

    @property
    def acked(self) -> SpoolPosition:
        return self._acked

    def backlog_bytes(self) -> int:
        """Durable bytes the store has not acknowledged yet."""
        with self._lock:
            sizes = sum(v for s, v in self._sizes.items() if s >= self._acked.segment)
            total = sizes + self._durable_end
        return max(0, total - self._acked.offset)

    # -- helpers ---------------------------------------------------------------------------------
    def _seg_path(self, seg: int) -> Path:
        return self.dir / f"{seg:012d}{SEGMENT_SUFFIX}"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob(f"*{SEGMENT_SUFFIX}") if p.stem.isdigit())

    def _next_segment(self, seg: int) -> int:
        with self._lock:
            later = [s for s in self._sizes if s > seg]
            return min(later) if later else self._active

    def _load_ack(self) -> SpoolPosition:
        try:
            text = (self.dir / "ack").read_text().split()
            return SpoolPosition(int(text[0]), int(text[1]))
        except FileNotFoundError:
            return SpoolPosition(0, 0)
        except (ValueError, IndexError) as exc:
            raise SpoolError(self.dir / "ack", 0, f"unreadable ack file: {exc}") from exc

    def _open_active(self) -> None:
        self._file = open(self._seg_path(self._active), "ab")  # noqa: SIM115 - long-lived handle
        self._durable_end = self._file.tell()
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)  # make the new segment's name durable too
        finally:
            os.close(dfd)

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        with self._lock:
            self._sizes[self._active] = self._durable_end
            self._active += 1
            self._durable_end = 0
        self._open_active()

    def _update_backlog(self) -> None:
        if self.metrics is not None:
            with self._gauge_lock:  # flush and ack run in different threads: last set must be freshest
                self.metrics.backlog_bytes.set(self.backlog_bytes())
