"""``sipcore serve`` runs the media service as its child, with one process or two workers: a phone
registered through the proxy reaches voicemail; the child is started again when it dies; SIGTERM
stops everything (no orphan keeps the media ports)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from sipcore.waiting import within
from tests.conftest import free_port
from tests.media_sip.conftest import write_media_config
from tests.media_sip.phone import MediaPhone

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(90)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _media_child(pid: int) -> int | None:
    return next((c for c in _children(pid) if " media " in _cmdline(c)), None)


async def _voicemail_answers(port: int, directory: Path) -> bool:
    """1002 registers and calls 1006 (never registered: its voicemail answers)."""
    phone = await MediaPhone.open_media("1002", "pw1002", ("127.0.0.1", port))
    try:
        await phone.register()
        dlg = await phone.call("1006")
        resp = await phone.response(dlg.call_id, final=True, timeout=10)
        if resp.status != 200:
            return False
        phone.ack(dlg, resp)
        phone.in_dialog(dlg, "BYE")
        return (await phone.response(dlg.call_id, "BYE", final=True, timeout=5)).status == 200
    finally:
        phone.close()


async def _until(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_starts_restarts_and_stops_the_media_child(tmp_path: Path, workers: int) -> None:
    port, media_port = free_port(), free_port()
    config = write_media_config(tmp_path, port, media_port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--config", str(config), "--workers", str(workers),
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert await _until(lambda: _media_child(proc.pid) is not None, 20), "no media child"
        first = _media_child(proc.pid)
        assert first is not None
        answered = False
        for _ in range(20):  # the proxy and the media service come up in parallel
            try:
                answered = await _voicemail_answers(port, tmp_path)
            except AssertionError:
                answered = False
            if answered:
                break
            await asyncio.sleep(0.5)
        assert answered, "voicemail did not answer through the proxy"

        os.kill(first, signal.SIGKILL)  # a crash: the server starts it again
        assert await _until(lambda: (c := _media_child(proc.pid)) is not None and c != first, 20)
        answered = False
        for _ in range(20):
            try:
                answered = await _voicemail_answers(port, tmp_path)
            except AssertionError:
                answered = False
            if answered:
                break
            await asyncio.sleep(0.5)
        assert answered, "voicemail did not answer after the media child was restarted"
        media = _media_child(proc.pid)
        assert len(_children(proc.pid)) == workers + 1 if workers > 1 else 1

        proc.send_signal(signal.SIGTERM)
        await within(proc.wait(), 20)
        assert media is not None
        assert await _until(lambda: not Path(f"/proc/{media}").exists() or "zombie" in _state(media), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stderr is not None:
            err = (await proc.stderr.read()).decode(errors="replace")
            if proc.returncode not in (0, None):
                print(err[-4000:])


def _state(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "status").read_text().lower()
    except OSError:
        return ""
