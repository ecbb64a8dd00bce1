"""``sipcore serve`` runs the media service as a child process (``sipcore media``) and keeps it up.

Started when ``media.enabled`` and ``proxy.media_service`` is an address of this host; restarted with
a growing pause (1 s up to 30 s) if it dies; SIGHUP is passed on; it is stopped (SIGTERM: its calls
get a BYE) when the server stops, and dies with the server if the server is killed outright
(PR_SET_PDEATHSIG), so no orphan keeps the media ports.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import signal
import subprocess
import sys
import time

import structlog

log = structlog.get_logger("sipcore.media")

MAX_BACKOFF = 30.0


def media_wanted(cfg: object) -> bool:
    """The YAML asks for the media service and names an address of this host for it."""
    media = cfg.file.media  # type: ignore[attr-defined]
    target = cfg.proxy.media_service  # type: ignore[attr-defined]
    if not media.enabled or target is None:
        return False
    host = str(target.host).strip("[]").lower()
    if host in ("localhost",) or host in cfg.local_hosts:  # type: ignore[attr-defined]
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class MediaChild:
    def __init__(self, config_path: str | None, log_format: str = "auto") -> None:
        self.argv = [sys.executable, "-m", "server.cli", "media", "--log-format", log_format]
        if config_path:
            self.argv += ["--config", config_path]
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.restarts = 0
        self._backoff = 1.0
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, preexec_fn=_die_with_parent)
        self._started_at = time.monotonic()
        log.info("media_child_started", pid=self.proc.pid)

    def died(self, status: int | None = None) -> None:
        """The child ended on its own: start it again after a pause that grows while it keeps dying."""
        if self.stopping:
            return
        log.error("media_child_exited", pid=self.pid, status=status, restart_in=self._backoff)
        if time.monotonic() - self._started_at > 60:
            self._backoff = 1.0  # it ran a while: a fresh failure, not a crash loop
        time.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        self.restarts += 1
        if not self.stopping:
            self.start()

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping = True
        proc = self.proc
        if proc is None:
            return
        try:
            proc.terminate()
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except (ProcessLookupError, ChildProcessError):
            pass

    async def watch(self, interval: float = 0.5) -> None:
        """Single-process mode: notice a death and restart (the workers' master uses ``died``)."""
        while not self.stopping:
            await asyncio.sleep(interval)
            proc = self.proc
            if proc is not None and proc.poll() is not None and not self.stopping:
                await asyncio.to_thread(self.died, proc.returncode)
