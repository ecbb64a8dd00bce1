"""What the call journal (server.call_journal) costs per call: the answered record, the ended record,
the "done" mark once the CDR is durable, and the writes + fdatasync that hold the replies.

Run: .venv/bin/python -m benchmarks.bench_call_journal [--calls 5000] [--batch 1 32] [--runs 3] [--dir PATH]

Per call, as the proxy does it: ``CallAnswered`` → ``DialogRecord.shifted`` + ``CallJournal.answered``,
its ``EndCall`` → ``CallJournal.ended``, the CDR durable → ``CallJournal.done``; ``sync`` runs once per
loop iteration (the transports' barrier), here after every ``--batch`` calls' records of each kind (1: each
call alone in its loop iteration, the worst case: two fdatasyncs per call). Figures: wall and CPU
microseconds per call (median of ``--runs``) in each ``fsync`` mode (reply: the loop waits for the
disk; background: a thread does; off), on the disk holding ``--dir``
(default: a temporary directory). The journal's file grows and is compacted as in service.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.machine import cpu_model, load_note
from calls.call_ended import CallEnded
from calls.dialog_record import DialogRecord
from calls.model import Destination
from server.call_journal import FDATASYNC_SECONDS, FSYNC_MODES, CallJournal, journal_path, recover_journals
from sipcore.flow import Flow


def _record(i: int) -> DialogRecord:
    caller = Destination("udp", "192.0.2.10", 5062, Flow("udp", ("192.0.2.10", 5062), ("192.0.2.1", 5060)))
    callee = Destination("udp", "192.0.2.20", 5060, None)
    return DialogRecord(
        f"{i:012d}-bench@192.0.2.10", "a8f3e2c1", "77ab0c9e", "outbound", "acme", "acme/2001", "acme/2001",
        "+33184000001", "0140000000", "+33140000000", None, None, True, 100.0 + i, 104.0 + i, 14504.0 + i,
        "max_duration", caller, callee, '"Alice" <sip:2001@acme.example>;tag=a8f3e2c1',
        "<sip:2001@192.0.2.10:5062;transport=udp>", 2, "<sip:+33140000000@carrier.example>;tag=77ab0c9e",
        "<sip:+33140000000@192.0.2.20:5060>",
    )  # fmt: skip


def _ended(i: int) -> CallEnded:
    return CallEnded(
        f"{i:012d}-bench@192.0.2.10", "0", "outbound", "acme", "acme/2001", "acme/2001", "+33184000001",
        "0140000000", "+33140000000", None, None, 100.0 + i, 104.0 + i, 164.0 + i, "answered", 200, "caller",
        True,
    )  # fmt: skip


async def run(directory: Path, calls: int, batch: int, fsync: str) -> tuple[float, float]:
    """(wall µs, CPU µs) per call; the loop turns once per batch (a background fdatasync's callback)."""
    recover_journals(directory, 1)
    journal = CallJournal(journal_path(directory, 0), fsync=fsync)
    journal.open()
    records = [_record(i) for i in range(calls)]
    ended = [_ended(i) for i in range(calls)]
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, calls, batch):
        chunk = range(start, min(start + batch, calls))
        for i in chunk:
            journal.answered(records[i].shifted(1.5))
        journal.sync()  # the 2xx of these INVITEs leave after this
        for i in chunk:
            journal.ended(ended[i])
        journal.sync()  # the 200 of these BYEs leave after this
        for i in chunk:
            journal.done(ended[i].call_id)
        await asyncio.sleep(0)  # the next loop iteration
    while journal._fdatasync_running:  # the last background fdatasync, as the process goes on
        await asyncio.sleep(0.0005)
    journal.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / calls * 1e6, cpu / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    print(f"call journal, {args.calls} calls per run, median of {args.runs}; {cpu_model()}")
    print("| fsync | calls per loop iteration | wall µs / call | CPU µs / call |")
    print("|---|---|---|---|")
    for fsync in FSYNC_MODES:
        for batch in args.batch:
            walls, cpus = [], []
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                    w, c = asyncio.run(run(Path(tmp), args.calls, batch, fsync))
                walls.append(w)
                cpus.append(c)
            print(f"| {fsync} | {batch} | {statistics.median(walls):.1f} | "
                  f"{statistics.median(cpus):.1f} |")  # fmt: skip
    print(f"fdatasync (the window of fsync: background; what fsync: reply waits for): {_fdatasync_figures()}")
    print(load_note())


def _fdatasync_figures() -> str:
    """Mean and p99 (bucket bound) of every fdatasync the runs made (the journal's histogram)."""
    samples = {
        s.name: s
        for m in FDATASYNC_SECONDS.collect()
        for s in m.samples
        if s.name.endswith(("_count", "_sum"))
    }
    count = next(s.value for n, s in samples.items() if n.endswith("_count"))
    total = next(s.value for n, s in samples.items() if n.endswith("_sum"))
    buckets = sorted(
        (float(s.labels["le"]), s.value) for m in FDATASYNC_SECONDS.collect() for s in m.samples
        if s.name.endswith("_bucket")
    )  # fmt: skip
    p99 = next(le for le, n in buckets if n >= 0.99 * count)
    return f"{int(count)} fdatasyncs, mean {total / count * 1000:.2f} ms, p99 <= {p99 * 1000:g} ms"


if __name__ == "__main__":
    main()
