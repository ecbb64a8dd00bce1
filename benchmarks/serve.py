"""`sipcore serve` as a benchmark's child process: started, ready, stopped.

A benchmark waits for the server's own word that it is ready (sd_notify ``READY=1`` on a private
abstract socket, as systemd would receive it) instead of polling its port, and stops it by its PID
with SIGTERM (SIGKILL only after ``stop_timeout``)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[1]


class Serve:
    """``python -m server.cli serve ARGS`` run in ``work`` (its output in ``work/serve.log``) from
    ``tree``; entered once it reports READY=1 (within ``timeout`` s), stopped on exit. ARGS are
    ``arguments()``: ``args`` as given, or what a subclass writes on entry (its config)."""

    def __init__(
        self,
        args: list[str],
        work: Path,
        *,
        tree: Path = ROOT,
        timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.args, self.work, self.tree = args, work, tree
        self.timeout, self.stop_timeout = timeout, stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def arguments(self) -> list[str]:
        """The ``serve`` command's arguments, decided on entry."""
        return self.args

    def __enter__(self) -> Self:
        name = f"sipcore-bench-{os.getpid()}-{secrets.token_hex(4)}"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            notify.bind("\0" + name)
            notify.settimeout(self.timeout)
            env = dict(os.environ, PYTHONPATH=str(self.tree), NOTIFY_SOCKET="@" + name)
            self.work.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "server.cli", "serve", *self.arguments()]
            with open(self.work / "serve.log", "wb") as log:  # the child keeps its own descriptor
                self.proc = subprocess.Popen(cmd, cwd=self.work, env=env, stdout=log, stderr=log)
            try:
                state = notify.recv(64)
            except TimeoutError:
                state = b""
        finally:
            notify.close()
        if state != b"READY=1":
            self.__exit__()
            raise RuntimeError(f"server in {self.work} did not report READY=1 (see serve.log): {state!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
