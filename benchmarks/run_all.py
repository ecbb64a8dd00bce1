"""`make bench`: run the pure-core benchmarks (no sockets) and assemble benchmarks/RESULTS.md.

Each area writes its own section to benchmarks/results/<area>.md (parser, digest, rating, routing,
location, cdr, config, transaction; the SIPp step-rate figures for REGISTER and calls are written by
bench_register / bench_call, which need a running server and SIPp and are not run here). This script
re-runs the quick pure benchmarks that support `--write`, then concatenates every section
(``--assemble``: concatenate only). bench_workers and bench_sip_cpu write `workers.md` and
`sip_cpu.md` with ``--write``.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from pathlib import Path

from benchmarks.machine import cpu_model

HERE = Path(__file__).parent
RESULTS = HERE / "results"
QUICK = ["bench_parser"]  # pure and self-contained: re-run on every `make bench`
ORDER = [
    "summary",
    "parser",
    "options",
    "transaction",
    "digest",
    "register",
    "call",
    "workers",
    "sip_cpu",
    "location",
    "config",
    "routing",
    "rating",
    "cdr",
]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--assemble" not in args:  # --assemble: only concatenate the sections already written
        for name in QUICK:
            subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--write"], check=True)
    sections = sorted(
        RESULTS.glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem)
    )
    head = [
        "# Benchmark results",
        "",
        f"Assembled {dt.date.today()} by `make bench` from `benchmarks/results/*.md` on {cpu_model()} "
        f"({platform.python_implementation()} {platform.python_version()}); each section states its own "
        "machine, date, command and figures. These machines have 2 noisy cores: compare ratios measured "
        "in one run.",
        "",
    ]
    body = [p.read_text().rstrip() + "\n" for p in sections]
    (HERE / "RESULTS.md").write_text("\n".join(head) + "\n" + "\n".join(body))
    print(f"wrote {HERE / 'RESULTS.md'} from {len(sections)} sections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
