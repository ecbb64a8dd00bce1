"""The outcome of a reload, as `Application.reload()` returns it and as the server writes it for
`sipcore reload` (and `systemctl reload`) to read.

Each process that serves — the single server, or every worker — writes its own status file,
``<state_dir>/reload/<main|worker-N>.json``, at start (``seq`` 0, ``status`` "started") and after each
reload (``seq`` + 1). Written whole, then renamed into place, so a reader never sees half a file. The
server (the master with workers) also writes its pid to ``<state_dir>/sipcore.pid``. `sipcore
reload` reads the files of the server's pid, sends SIGHUP, and waits until every process has
written a newer ``seq``; the reload succeeded when every one applied it, with the same result.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUS_DIR = "reload"
PID_FILE = "sipcore.pid"


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """``applied`` (with what changed live and what the file asks that needs a restart) or
    ``refused`` (with every error; the running configuration is kept)."""

    status: str  # "applied" | "refused"
    errors: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()
    digest: str = ""  # of the YAML and rate files applied: every worker must have read the same

    @property
    def ok(self) -> bool:
        return self.status == "applied"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("errors", "changed", "needs_restart"):
            out[key] = list(out[key])
        return out


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """One serving process's status file."""

    server_pid: int  # the pid `sipcore reload` signals: the master's with workers
    worker: int | None
    workers: int
    seq: int = 0  # reloads done since start
    status: str = "started"
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "main" if self.worker is None else f"worker-{self.worker}"


def status_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / STATUS_DIR


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def write_status(state_dir: str | Path, status: ProcessStatus) -> None:
    data = asdict(status)
    write_json(status_dir(state_dir) / f"{status.name}.json", data)


def read_statuses(state_dir: str | Path, server_pid: int) -> dict[str, ProcessStatus]:
    """The status files the server ``server_pid`` wrote (others are left by earlier runs)."""
    out: dict[str, ProcessStatus] = {}
    directory = status_dir(state_dir)
    if not directory.is_dir():
        return out
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
            status = ProcessStatus(**data)
        except (OSError, ValueError, TypeError):
            continue
        if status.server_pid == server_pid:
            out[status.name] = status
    return out


def write_pid(state_dir: str | Path, pid: int) -> Path:
    path = Path(state_dir) / PID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{PID_FILE}.{pid}.tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)
    return path


def remove_pid(path: Path, pid: int) -> None:
    """Remove the pid file if it is still ours."""
    try:
        if int(path.read_text().strip() or 0) == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def read_pid(state_dir: str | Path) -> int | None:
    try:
        return int((Path(state_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
