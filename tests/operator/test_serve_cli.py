"""Issue 17, item 1: `sipcore --version`, and a listening address already in use at `serve` answered
with one line naming the transport and the address (exit 1), not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def sipcore(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    done = sipcore("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"sipcore {version('sipcore')}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "workers"), [("udp", "1"), ("tcp", "1"), ("udp", "2"), ("tcp", "2")])
def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path, kind: str, workers: str) -> None:
    busy, other = free_port(), free_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", busy))
    if kind == "tcp":
        holder.listen(1)
    udp, tcp = (busy, other) if kind == "udp" else (other, busy)
    try:
        done = sipcore(
            "serve", "--no-media", "--metrics", "off", "--log-format", "json", "--workers", workers,
            "--udp", f"127.0.0.1:{udp}", "--tcp", f"127.0.0.1:{tcp}", cwd=tmp_path,
        )  # fmt: skip
    finally:
        holder.close()
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    expected = f"sipcore serve: cannot listen on {kind.upper()} 127.0.0.1:{busy}: Address already in use"
    assert expected in done.stderr.splitlines()


@pytest.mark.timeout(60)
def test_metrics_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    sip, busy = free_port(), free_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", busy))
    holder.listen(1)
    try:
        done = sipcore(
            "serve", "--no-media", "--metrics", f"127.0.0.1:{busy}", "--log-format", "json",
            "--udp", f"127.0.0.1:{sip}", "--tcp", f"127.0.0.1:{sip}", cwd=tmp_path,
        )  # fmt: skip
    finally:
        holder.close()
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    expected = f"sipcore serve: cannot listen on HTTP 127.0.0.1:{busy} (metrics): Address already in use"
    assert expected in done.stderr.splitlines()
