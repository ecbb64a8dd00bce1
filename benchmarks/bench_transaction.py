"""Transactions created and completed per second through one TransactionLayer, pure core, no sockets.

Messages are parsed and validated (``validate_request``/``validate_response``, as the server edge does
before it hands them over) before the clock starts; the parser has its own benchmark. The figure is the
transaction layer's own cost: matching, state table, timers on the timer wheel, outputs, 100 Trying /
ACK construction where the case needs them, and the drop of the terminated transaction. ``now`` is a
fake clock advanced by the benchmark. ``--cold`` skips the validation so the first (lazy) header
parses are paid inside the timed section.

Cases (each operation is one whole transaction life):
- non_invite_server: REGISTER received, 200 sent, timer J fires (UDP), terminated;
- invite_server_2xx: INVITE received, 180 then 200 sent, terminated (100 Trying timer armed, cancelled);
- invite_server_486: INVITE received, 486 sent, ACK absorbed, timer I fires, terminated;
- invite_client_2xx: INVITE sent, 180 then 200 received, terminated;
- invite_client_486: INVITE sent, 486 received, ACK built and sent, timer D fires, terminated.

Usage: ``.venv/bin/python -m benchmarks.bench_transaction [--runs 5] [--batch 5000] [--write]``; prints
the median of the runs per case (and with --write replaces benchmarks/results/transaction.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from sipcore.message import Request, Response, parse, validate_request, validate_response
from sipcore.transaction import TransactionLayer

WARM = True  # validate messages before timing (as the edge does); --cold turns it off
SOURCE = ("UDP", "192.168.1.20", 5060)
DEST = ("UDP", "198.51.100.7", 5060)


def request(method: str, branch: str, to_tag: str | None = None) -> Request:
    to = "<sip:1002@pbx.example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:1002@pbx.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.168.1.20:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"To: {to}\r\n"
        'From: "Alice" <sip:1001@pbx.example.com>;tag=1928301774\r\n'
        f"Call-ID: {branch}@192.168.1.20\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:1001@192.168.1.20:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    assert isinstance(msg, Request)
    if WARM:
        validate_request(msg)
    return msg


def wire(msg: Response) -> Response:
    parsed = parse(bytes(msg))
    assert isinstance(parsed, Response)
    if WARM:
        validate_response(parsed)
        parsed.to_tag  # noqa: B018 - read by the edge's logging/dialog code anyway
    return parsed


# Each case: prepare(n) -> list of per-transaction inputs (untimed); run(layer, inputs, now) (timed).


def prep_server(method: str, statuses: tuple[int, ...], ack: bool) -> Callable[[int], list]:
    def prepare(n: int) -> list:
        items = []
        for i in range(n):
            req = request(method, f"z9hG4bKs{i}")
            responses = [req.make_response(s, to_tag="t1") for s in statuses]
            items.append((req, responses, request("ACK", f"z9hG4bKs{i}", to_tag="t1") if ack else None))
        return items

    return prepare


def run_server(layer: TransactionLayer, items: list, now: float) -> None:
    on_request, send_response = layer.on_request, layer.send_response
    for req, responses, ack in items:
        txn = on_request(req, SOURCE, now)[0].transaction
        for resp in responses:
            send_response(resp, now, txn)
        if ack is not None:
            on_request(ack, SOURCE, now)
    layer.on_timer(now + 40.0)  # timers J / I fire; everything terminates


def prep_client(statuses: tuple[int, ...]) -> Callable[[int], list]:
    def prepare(n: int) -> list:
        items = []
        for i in range(n):
            req = request("INVITE", f"z9hG4bKc{i}")
            items.append((req, [wire(req.make_response(s, to_tag="t1")) for s in statuses]))
        return items

    return prepare


def run_client(layer: TransactionLayer, items: list, now: float) -> None:
    send_request, on_response = layer.send_request, layer.on_response
    for req, responses in items:
        send_request(req, DEST, now)
        for resp in responses:
            on_response(resp, now)
    layer.on_timer(now + 40.0)  # timer D fires where it was armed


CASES: dict[str, tuple[Callable[[int], list], Callable[[TransactionLayer, list, float], None]]] = {
    "non_invite_server": (prep_server("REGISTER", (200,), False), run_server),
    "invite_server_2xx": (prep_server("INVITE", (180, 200), False), run_server),
    "invite_server_486": (prep_server("INVITE", (486,), True), run_server),
    "invite_client_2xx": (prep_client((180, 200)), run_client),
    "invite_client_486": (prep_client((486,)), run_client),
}


def measure(case: str, batch: int) -> tuple[float, float]:
    """(transactions per wall-clock second, per CPU second of this process). On a shared, loaded
    machine the CPU-time figure is the steadier one: it leaves out the time other processes ran."""
    prepare, run = CASES[case]
    items = prepare(batch)
    layer = TransactionLayer()
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    run(layer, items, 1000.0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(layer) == 0 and layer.next_deadline() is None, "every transaction must have terminated"
    return batch / wall, batch / max(cpu, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--cold", action="store_true", help="leave header parsing inside the timed section")
    args = ap.parse_args()
    global WARM
    WARM = not args.cold
    rows = []
    for case in CASES:
        figures = [measure(case, args.batch) for _ in range(args.runs)]
        wall = [w for w, _ in figures]
        cpu = [c for _, c in figures]
        rows.append((case, statistics.median(wall), statistics.median(cpu), cpu))
        print(
            f"{case:20s} median {statistics.median(wall):>10,.0f} /s wall-clock, "
            f"{statistics.median(cpu):>10,.0f} /s CPU time"
        )
    if args.write:
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in ln
            ),
            "?",
        )
        lines = [
            "# Transaction layer benchmark",
            "",
            f"- Machine: `nproc` = {os.cpu_count()}, {cpu}; measured **under load** "
            f"(other helpers running tests; load average {os.getloadavg()[0]:.1f}).",
            f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            f"- Command: `.venv/bin/python -m benchmarks.bench_transaction --runs {args.runs} "
            f"--batch {args.batch}` (median of the runs)",
            "",
            "| Case | Median transactions/s (wall clock) | Median per CPU second | CPU-time runs |",
            "|---|---:|---:|---|",
        ]
        lines += [
            f"| {c} | {w:,.0f} | **{m:,.0f}** | {' · '.join(f'{f:,.0f}' for f in fs)} |"
            for c, w, m, fs in rows
        ]
        out = Path(__file__).parent / "results" / "transaction.md"
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
