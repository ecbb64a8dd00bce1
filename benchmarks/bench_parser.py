"""Parse + serialize throughput of the SIP core vs sipmessage, and corpus agreement of both.

Run: .venv/bin/python -m benchmarks.bench_parser [--seconds S]. Prints a markdown table; with --write,
replaces benchmarks/results/parser.md.

What is timed per message (one core, pure, no sockets):
- sipcore "proxy path": parse, validate (every mandatory header and the Request-URI), read top Via branch + Call-ID + CSeq + From/To tags + Max-Forwards, add a
  Via, decrement Max-Forwards, serialize (a full rebuild, not the cached raw bytes).
- sipcore "lazy": parse (start line, header lines, framing), serialize by a full rebuild.
- sipcore "parse+validate+serialize": parse, validate, read the same fields, serialize after invalidating the raw cache.
- sipmessage: Message.parse then bytes(str(msg)) / str(msg) (its serializer), reading the same fields.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path

from benchmarks.samples import INVITE, REGISTER
from sipcore.errors import SipParseError
from sipcore.message import Request, parse, validate_request

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "conformance"


def ours_parse_serialize(data: bytes) -> bytes:
    msg = parse(data)
    validate_request(msg)  # type: ignore[arg-type]
    msg.top_via.branch, msg.call_id, msg.cseq, msg.from_tag, msg.to_tag  # noqa: B018
    msg.raw = None
    return msg.serialize()


def ours_lazy(data: bytes) -> bytes:
    msg = parse(data)
    msg.raw = None
    return msg.serialize()


def ours_proxy_path(data: bytes) -> bytes:
    msg = parse(data)
    validate_request(msg)  # type: ignore[arg-type]
    msg.top_via.branch, msg.call_id, msg.cseq, msg.from_tag, msg.to_tag  # noqa: B018
    mf = msg.max_forwards or 70
    msg.headers.set("max-forwards", str(mf - 1))
    msg.headers.add("via", "SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-proxy-1", first=True)
    msg.invalidate()
    return msg.serialize()


def theirs_parse_serialize(data: bytes) -> bytes:
    from sipmessage import Message

    msg = Message.parse(data)
    msg.via[0].parameters.get("branch"), msg.call_id, msg.cseq
    msg.from_address.parameters.get("tag"), msg.to_address.parameters.get("tag")
    return bytes(msg)


def rate(fn, data: bytes, seconds: float) -> float:  # type: ignore[no-untyped-def]
    fn(data)
    n = 0
    batch = 200
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(batch):
            fn(data)
        n += batch
        now = time.perf_counter()
        if now >= end:
            return n / (now - start)


def corpus_agreement() -> dict[str, tuple[int, int]]:
    """How many manifest expectations (accept / reject) each parser meets on the RFC 4475/5118 corpus."""
    from sipmessage import Message

    manifest = json.loads((CORPUS / "manifest.json").read_text())
    scores = {"sipcore": [0, 0], "sipmessage": [0, 0]}
    for entry in manifest:
        if entry["outcome"] not in ("accept", "reject"):
            continue
        data = (CORPUS / entry["file"]).read_bytes()
        want_ok = entry["outcome"] == "accept"
        try:
            msg = parse(data)
            if isinstance(msg, Request):
                validate_request(msg)
            ok = True
        except SipParseError:
            ok = False
        scores["sipcore"][0] += ok == want_ok
        scores["sipcore"][1] += 1
        try:
            m = Message.parse(data)
            m.via, m.cseq, m.from_address, m.to_address  # noqa: B018
            ok = True
        except Exception:
            ok = False
        scores["sipmessage"][0] += ok == want_ok
        scores["sipmessage"][1] += 1
    return {k: (v[0], v[1]) for k, v in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    rows = []
    for label, fn in (
        ("sipcore parse+serialize (lazy: start line, header split, framing; full rebuild)", ours_lazy),
        (
            "sipcore parse+validate+serialize (every mandatory header and the Request-URI parsed)",
            ours_parse_serialize,
        ),
        ("sipcore proxy path (parse, +Via, Max-Forwards-1, serialize)", ours_proxy_path),
        ("sipmessage parse+serialize", theirs_parse_serialize),
    ):
        for name, data in (("INVITE", INVITE), ("REGISTER", REGISTER)):
            figures = [rate(fn, data, args.seconds) for _ in range(args.repeat)]
            rows.append((label, name, statistics.median(figures)))
    agreement = corpus_agreement()
    lines = [
        "## SIP parser: sipcore vs sipmessage",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, one core; date {dt.date.today()}",
        f"- command: `.venv/bin/python -m benchmarks.bench_parser --seconds {args.seconds} "
        f"--repeat {args.repeat}` (median of {args.repeat})",
        "",
        "| what | message | messages/s |",
        "| --- | --- | ---: |",
    ]
    lines += [f"| {label} | {name} | {value:,.0f} |" for label, name, value in rows]
    lines += [
        "",
        "Corpus agreement (RFC 4475 + RFC 5118 messages whose manifest outcome is accept or reject; a "
        "parser meets it when it parses an `accept` message and refuses a `reject` one):",
        "",
    ]
    lines += [f"- {k}: {v[0]}/{v[1]}" for k, v in agreement.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = Path(__file__).parent / "results" / "parser.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text)


if __name__ == "__main__":
    main()
