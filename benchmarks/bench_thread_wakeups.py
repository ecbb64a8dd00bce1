"""What a helper thread costs the event loop's thread: the latency of a GIL-releasing system call
(a 200-byte ``os.write`` to a file, as the call journal does) made between short bursts of work.

    .venv/bin/python -m benchmarks.bench_thread_wakeups [--n 20000] [--work-us 100] [--rounds 2]

Sides, each in a fresh process, alternated: no other thread; a Python thread waking every 10 ms
(``time.sleep``); the call journal's fdatasync thread in Python (`server.group_commit.PyGroupCommit`)
and in C (`NativeGroupCommit`), each asked to sync after every write as the journal does.

Why: a Python thread that wakes ~100 times a second made every GIL-releasing call of the loop's
thread dearer (the C thread, which never takes the GIL, does not); that is why the journal's thread
is C when built. Figures: per write, mean and median µs; process CPU µs per iteration (the burst of
work included, so compare sides).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SIDES = ("alone", "python-sleeper", "python-committer", "c-committer")


def child(side: str, n: int, work_us: float) -> str:
    from server import group_commit

    with tempfile.TemporaryDirectory() as tmp:
        fd = os.open(os.path.join(tmp, "journal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        stop = threading.Event()
        committer: group_commit.PyGroupCommit | group_commit.NativeGroupCommit | None = None
        if side == "python-sleeper":

            def sleeper() -> None:
                while not stop.is_set():
                    time.sleep(0.01)

            threading.Thread(target=sleeper, daemon=True).start()
        elif side == "python-committer":
            committer = group_commit.PyGroupCommit(os.fdatasync, lambda exc: None)
        elif side == "c-committer":
            if group_commit._native is None:
                return "skipped (server._group_commit_c not built)"
            committer = group_commit.NativeGroupCommit(lambda exc: None, lambda seconds: None)
        data = b"x" * 200
        took: list[float] = []
        cpu = time.process_time()
        for _ in range(n):
            began = time.perf_counter()
            os.write(fd, data)
            took.append(time.perf_counter() - began)
            if committer is not None:
                committer.request(fd)
            until = time.perf_counter() + work_us / 1e6
            while time.perf_counter() < until:  # the loop's other work
                pass
        cpu = time.process_time() - cpu
        stop.set()
        if committer is not None:
            committer.stop()
        os.close(fd)
    mean = statistics.fmean(took) * 1e6
    median = statistics.median(took) * 1e6
    return f"write mean {mean:.2f} µs, median {median:.2f} µs; CPU {cpu / n * 1e6:.1f} µs per iteration"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--work-us", type=float, default=100.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(child(args.child, args.n, args.work_us))
        return 0
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(
        f"### Helper threads and the loop's system calls ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
    )
    print(
        f"- command: `.venv/bin/python -m benchmarks.bench_thread_wakeups --n {args.n} --work-us {args.work_us:g}`"
    )
    for _ in range(args.rounds):
        for side in SIDES:
            cmd = [sys.executable, "-m", "benchmarks.bench_thread_wakeups", "--child", side, "--n", str(args.n),
                   "--work-us", str(args.work_us)]  # fmt: skip
            out = subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True).stdout.strip()
            print(f"- {side}: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
