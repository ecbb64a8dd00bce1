"""Run SIPp as a bounded subprocess and read its final statistics."""

from __future__ import annotations

import asyncio
import csv
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sipcore.waiting import within

SCENARIOS = Path(__file__).parent


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    stderr: str


async def run_sipp(
    sipp: str, target: str, scenario: str, transport: str = "u1", calls: int = 100, rate: int = 100,
    extra: tuple[str, ...] = (), timeout: float = 60.0, local_port: int | None = None,
) -> SippResult:  # fmt: skip
    """sipp exits 0 when every call succeeded; statistics come from its -trace_stat CSV."""
    with tempfile.TemporaryDirectory() as tmp:
        stat = Path(tmp) / "stat.csv"
        args = [
            sipp, target, "-sf", str(SCENARIOS / scenario), "-t", transport, "-m", str(calls), "-r", str(rate),
            "-i", "127.0.0.1", "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin",
            "-trace_stat", "-stf", str(stat), "-fd", "1", "-max_socket", "1000", *extra,
        ]  # fmt: skip
        if local_port is not None:
            args += ["-p", str(local_port)]
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=tmp, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, err = await within(proc.communicate(), timeout + 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        successful = failed = 0
        if stat.exists():
            rows = list(csv.reader(io.StringIO(stat.read_text()), delimiter=";"))
            if len(rows) >= 2:
                header, last = rows[0], rows[-1]
                successful = int(last[header.index("SuccessfulCall(C)")])
                failed = int(last[header.index("FailedCall(C)")])
        return SippResult(proc.returncode or 0, successful, failed, err.decode(errors="replace"))
