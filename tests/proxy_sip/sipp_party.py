"""SIPp parties for the proxy wire tests: register a SIPp phone from its own port, run a UAS (a phone
or the carrier) in the background and a UAC in the foreground. Every run is bounded (-timeout and an
outer wait) and killed by its own PID if it overruns; exit status 0 means every call succeeded."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sipcore.waiting import within

HERE = Path(__file__).parent
_running: list[SippRun] = []  # every run started, so a failed test leaves no SIPp behind (stop_all)


@dataclass
class SippRun:
    proc: asyncio.subprocess.Process
    directory: Path

    async def result(self, timeout: float = 15.0) -> int:
        """Exit status (0: every call succeeded); kills the process if it overruns."""
        try:
            return await within(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return -9

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def errors(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.directory.glob("*_errors.log"))


async def start(sipp: str, directory: Path, scenario: str, *args: str, host: str = "127.0.0.1", port: int,
                calls: int = 1, timeout: int = 10, expect: Mapping[str, str] | None = None) -> SippRun:  # fmt: skip
    """``expect`` fills the scenario's ``@NAME@`` placeholders with regexp-escaped literal values
    (SIPp does not substitute variables inside ``<ereg regexp>``)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (HERE / scenario).read_text(encoding="iso-8859-1")
    for name, value in (expect or {}).items():
        text = text.replace(f"@{name}@", re.escape(value))
    rendered = directory / scenario
    rendered.write_text(text, encoding="iso-8859-1")
    cmd = [sipp, *args, "-sf", str(rendered), "-i", host, "-p", str(port), "-m", str(calls),
           "-timeout", f"{timeout}s", "-timeout_error", "-nostdin", "-trace_err"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=directory, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    run = SippRun(proc, directory)
    _running.append(run)
    return run


async def stop_all() -> None:
    """Kill (by PID) every SIPp this module started that is still running."""
    while _running:
        await _running.pop().stop()


def credentials(directory: Path, user: str, password: str) -> Path:
    """An -inf injection file with one user and its digest credentials (as SIPp's [authentication])."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{user}.csv"
    path.write_text(
        f"SEQUENTIAL\n{user};[authentication username={user} password={password}];\n", encoding="utf-8"
    )
    return path


async def register(sipp: str, directory: Path, target: str, user: str, password: str, port: int) -> None:
    """REGISTER (with digest) from ``port``: the proxy then reaches the phone at 127.0.0.1:port."""
    inf = credentials(directory, user, password)
    run = await start(
        sipp, directory / f"reg-{user}", "register_auth.xml", target, "-inf", str(inf), port=port
    )
    assert await run.result() == 0, f"SIPp {user} did not register: {run.errors()}"
