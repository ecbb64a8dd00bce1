"""A real softphone for the media tests: baresip 1.0 (Debian ``baresip-core``) run as a subprocess,
driven over its ``ctrl_tcp`` module (netstring-framed JSON: commands in, responses and events out).

baresip 1.0 specifics this relies on:

* microphone: ``ausine`` (a sine tone; it only runs at 48 kHz stereo, baresip resamples to G.711)
  or ``aufile`` (a WAV file, 16-bit mono at ``ausrc_srate``), set by ``audio_source``;
* ears: the ``sndfile`` audio filter writes what is encoded and decoded to
  ``<snd_path>/dump-<time>-enc.wav`` / ``-dec.wav``; no audio player is needed for that;
* commands (``dial``, ``sndcode``, ``hangup``...) are the ``menu`` module's, passed to
  ``ctrl_tcp`` as ``{"command": ..., "params": ..., "token": ...}``; events (``REGISTER_OK``,
  ``CALL_ESTABLISHED``, ``CALL_CLOSED``, ``MWI_NOTIFY``...) come back as ``{"event": true, ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import free_port

MODULES = Path("/usr/lib/baresip/modules")


def baresip_binary() -> str | None:
    return shutil.which("baresip")


@dataclass
class Baresip:
    """One running baresip with one account; ``events`` keeps every event it reported."""

    proc: asyncio.subprocess.Process
    home: Path
    snd_path: Path
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    events: list[dict[str, Any]] = field(default_factory=list)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    output: bytearray = field(default_factory=bytearray)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _token: int = 0

    # ---- commands ---------------------------------------------------------------------------------
    async def command(self, command: str, params: str = "", timeout: float = 3.0) -> dict[str, Any]:
        """Run a menu command; returns its response ({"ok": bool, "data": str})."""
        self._token += 1
        token = str(self._token)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.writer.write(b"%d:%s," % (len(body), body))
        await self.writer.drain()
        await self._wait(lambda: token in self.responses, timeout, f"response to {command}")
        return self.responses[token]

    async def event(
        self, kind: str, timeout: float = 5.0, pred: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The first event of type ``kind`` (matching ``pred``), waiting up to ``timeout`` seconds."""

        def found() -> dict[str, Any] | None:
            for ev in self.events:
                if ev.get("type") == kind and (pred is None or pred(ev)):
                    return ev
            return None

        await self._wait(lambda: found() is not None, timeout, f"event {kind}")
        result = found()
        assert result is not None
        return result

    async def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            left = deadline - loop.time()
            if left <= 0 or self.proc.returncode is not None:
                kinds = [e.get("type") for e in self.events]
                raise AssertionError(
                    f"baresip: no {what} within {timeout}s; events {kinds}; log:\n{self.log()}"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.2))

    def log(self, tail: int = 4000) -> str:
        return self.output.decode(errors="replace")[-tail:]

    def recordings(self, side: str = "dec") -> list[Path]:
        """The sndfile dumps (``dec``: what baresip heard; ``enc``: what it sent), oldest first."""
        return sorted(self.snd_path.glob(f"dump-*-{side}.wav"))

    # ---- reading its output -----------------------------------------------------------------------
    async def _read_ctrl(self) -> None:
        buf = b""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                buf += chunk
                while True:
                    head, colon, rest = buf.partition(b":")
                    if not colon or not head.isdigit() or len(rest) < int(head) + 1:
                        break
                    size = int(head)
                    payload, buf = rest[:size], rest[size + 1 :]
                    try:
                        msg = json.loads(payload)
                    except ValueError:
                        continue
                    if msg.get("event"):
                        self.events.append(msg)
                    elif msg.get("response"):
                        self.responses[str(msg.get("token"))] = msg
                    self._arrived.set()

    async def _read_output(self) -> None:
        assert self.proc.stdout is not None
        while True:
            chunk = await self.proc.stdout.read(65536)
            if not chunk:
                return
            self.output += chunk
            self._arrived.set()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.returncode is None:
                await self.command("quit", timeout=1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 2.0)
        if self.proc.returncode is None:
            self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), 5.0)
        self.writer.close()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)


def write_config(
    home: Path,
    *,
    user: str,
    password: str,
    server_port: int,
    source: str,
    snd_path: Path,
    ctrl_port: int,
    mwi: bool,
    source_rate: int = 48000,
    source_channels: int = 2,
) -> None:
    """The ``config`` and ``accounts`` files of one baresip home directory."""
    rtp_low = random.randrange(40000, 48000, 2)  # away from the media service's ports (30000-39400)
    home.mkdir(parents=True, exist_ok=True)
    snd_path.mkdir(parents=True, exist_ok=True)
    lines = [
        ("poll_method", "epoll"),
        ("sip_listen", f"127.0.0.1:{free_port()}"),
        ("module_path", str(MODULES)),
        ("net_interface", "127.0.0.1"),
        ("call_local_timeout", "20"),
        ("audio_source", source),
        ("ausrc_srate", str(source_rate)),
        ("ausrc_channels", str(source_channels)),
        ("audio_buffer", "20-160"),
        ("rtp_ports", f"{rtp_low}-{rtp_low + 40}"),
        ("jitter_buffer_delay", "1-5"),
        ("snd_path", str(snd_path)),
        ("ctrl_tcp_listen", f"127.0.0.1:{ctrl_port}"),
        ("module", "g711.so"),
        ("module", "ausine.so"),
        ("module", "aufile.so"),
        ("module", "sndfile.so"),
        ("module_app", "account.so"),
        ("module_app", "menu.so"),
        ("module_app", "ctrl_tcp.so"),
    ]
    if mwi:
        lines.append(("module_app", "mwi.so"))
    (home / "config").write_text("".join(f"{k}\t\t{v}\n" for k, v in lines), encoding="ascii")
    (home / "accounts").write_text(
        f"<sip:{user}@127.0.0.1:{server_port};transport=udp>;auth_pass={password};regint=600;"
        f"audio_codecs=PCMU;answermode=manual;mwi={'yes' if mwi else 'no'}\n",
        encoding="ascii",
    )


@contextlib.asynccontextmanager
async def baresip(
    directory: Path,
    *,
    user: str,
    server_port: int,
    source: str = "ausine,1000",
    mwi: bool = False,
    source_rate: int = 48000,
    source_channels: int = 2,
) -> AsyncIterator[Baresip]:
    """Start baresip as ``user`` (password ``pw<user>``) against the proxy on ``server_port``, with
    ``source`` as its microphone; it is killed on the way out whatever happens."""
    binary = baresip_binary()
    assert binary is not None
    home = directory / f"baresip-{user}"
    snd_path = home / "heard"
    ctrl_port = free_port()
    write_config(home, user=user, password=f"pw{user}", server_port=server_port, source=source,
                 snd_path=snd_path, ctrl_port=ctrl_port, mwi=mwi, source_rate=source_rate,
                 source_channels=source_channels)  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        binary, "-f", str(home), "-v", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    phone: Baresip | None = None
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", ctrl_port)
                break
            except OSError:
                if loop.time() > deadline or proc.returncode is not None:
                    raise
                await asyncio.sleep(0.05)
        phone = Baresip(proc, home, snd_path, reader, writer)
        phone._tasks = [loop.create_task(phone._read_ctrl()), loop.create_task(phone._read_output())]
        yield phone
    finally:
        if phone is not None:
            await phone.stop()
            print(phone.log(8000))  # shown by pytest when the test fails
        elif proc.returncode is None:
            proc.kill()
            out, _ = await asyncio.wait_for(proc.communicate(), 5)
            print(out.decode(errors="replace")[-4000:])
