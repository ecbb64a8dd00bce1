"""A real softphone for the media tests: baresip 1.0 (Debian ``baresip-core``) run as a subprocess,
driven over its ``ctrl_tcp`` module (netstring-framed JSON: commands in, responses and events out).

What baresip 1.0 does, and how it is used here:

* microphone: ``ausine`` (a sine, ``audio_source ausine,<Hz>``) runs only at 48 kHz stereo
  (``ausrc_srate 48000``, ``ausrc_channels 2``); baresip resamples to G.711's 8 kHz mono. Or
  ``aufile`` (``audio_source aufile,<path>``): a 16-bit WAV at ``ausrc_srate``/``ausrc_channels``;
* ears: the ``sndfile`` audio filter writes what it encodes and decodes to
  ``<snd_path>/dump-<time>-enc.wav`` / ``-dec.wav`` (8 kHz mono for PCMU, complete once the call
  ends); no audio player module is needed;
* commands (``uanew``, ``dial``, ``sndcode`` = RFC 4733 digit, ``hangup`` = 486 on a ringing call,
  ``quit``) are the ``menu`` module's, sent to ``ctrl_tcp`` as ``{"command", "params", "token"}``;
  events (``REGISTER_OK``, ``CALL_INCOMING``, ``CALL_ESTABLISHED``, ``CALL_CLOSED``,
  ``MWI_NOTIFY``...) come back as ``{"event": true, "type": ...}``, to connected clients only;
* the ``mwi`` module subscribes to message-summary for the account's AOR on ``REGISTER_OK``; the
  ``menu`` module prints each NOTIFY body under ``----- MWI for <aor> -----``.

MWI_START_UP: baresip 1.0's ``mwi`` module starts a 1 ms timer at load that re-subscribes every
subscription in its list while appending to that list: if the account has registered by then (a
fast registrar on loopback often wins that race) baresip loops forever sending SUBSCRIBEs. So the
accounts file is empty and the account is created with ``uanew`` once baresip runs (and its
``REGISTER_OK`` waited for), long after that timer fired on an empty list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipcore.waiting import wait_set, within
from tests.conftest import free_port

MODULES = Path("/usr/lib/baresip/modules")
RTP_PORTS = 64  # libre picks RTP/RTCP pairs at random in the range (64 tries)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MWI_BLOCK = re.compile(r"----- MWI for \S+ -----\r?\n(.*?)(?:\r?\n){2}", re.S)


def free_udp_range(count: int) -> int:
    """An even port starting ``count`` ports all free on 127.0.0.1 (UDP) right now: below the kernel's
    ephemeral range and the ranges other tests use (``free_port``: 20000-32000, the media service:
    30000-39400), since benchmarks running beside the tests hold hundreds of RTP ports up there."""
    for _ in range(100):
        low = random.randrange(10000, 19900 - count, 2)
        if all(_udp_free(port) for port in range(low, low + count)):
            return low
    raise RuntimeError("no free range of UDP ports for baresip's RTP")


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
            await wait_set(self._arrived, min(left, 0.2))

    def log(self, tail: int = 4000) -> str:
        return self.output.decode(errors="replace")[-tail:]

    def mwi_bodies(self) -> list[str]:
        """The message-summary bodies baresip printed ("----- MWI for <aor> -----", then the body),
        oldest first: what the ``mwi`` module received in NOTIFYs."""
        text = _ANSI.sub("", self.output.decode(errors="replace"))
        return [m.group(1) for m in _MWI_BLOCK.finditer(text)]

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
            await within(self.proc.wait(), 2.0)
        if self.proc.returncode is None:
            self.proc.kill()
            await within(self.proc.wait(), 5.0)
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
    cafile: Path | None = None,
) -> None:
    """The ``config`` and (empty, see MWI_START_UP) ``accounts`` files of one baresip home;
    ``cafile``: the CA that signed the server's TLS certificate (``sip_cafile``)."""
    rtp_low = free_udp_range(RTP_PORTS)
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
        ("rtp_ports", f"{rtp_low}-{rtp_low + RTP_PORTS - 1}"),
        ("jitter_buffer_delay", "1-5"),
        ("statmode_default", "off"),  # no call status line every 100 ms in the log
        ("snd_path", str(snd_path)),
        ("ctrl_tcp_listen", f"127.0.0.1:{ctrl_port}"),
        ("module", "g711.so"),
        ("module", "ausine.so"),
        ("module", "aufile.so"),
        ("module", "sndfile.so"),
        ("module_app", "account.so"),
        ("module_app", "menu.so"),
        ("module_app", "ctrl_tcp.so"),
        *([("module_app", "mwi.so")] if mwi else []),
        *([("sip_cafile", str(cafile))] if cafile is not None else []),
    ]
    (home / "config").write_text("".join(f"{k}\t\t{v}\n" for k, v in lines), encoding="ascii")
    (home / "accounts").write_text("", encoding="ascii")


def account_line(user: str, password: str, server_port: int, mwi: bool, transport: str = "udp") -> str:
    """The account, registering with the proxy (MD5 digest: it challenges baresip with MD5 only)."""
    return (
        f"<sip:{user}@127.0.0.1:{server_port};transport={transport}>;auth_pass={password};regint=600;"
        f"audio_codecs=PCMU;answermode=manual;mwi={'yes' if mwi else 'no'}"
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
    trace: bool = False,
    transport: str = "udp",
    cafile: Path | None = None,
) -> AsyncIterator[Baresip]:
    """Start baresip as ``user`` (password ``pw<user>``) against the proxy on ``server_port``, with
    ``source`` as its microphone; it is killed on the way out whatever happens. ``trace``: baresip
    prints every SIP message it sends and receives (``-s``) into its log."""
    binary = baresip_binary()
    assert binary is not None
    home = directory / f"baresip-{user}"
    snd_path = home / "heard"
    ctrl_port = free_port()
    write_config(home, user=user, password=f"pw{user}", server_port=server_port, source=source,
                 snd_path=snd_path, ctrl_port=ctrl_port, mwi=mwi, source_rate=source_rate,
                 source_channels=source_channels, cafile=cafile)  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        binary, "-f", str(home), "-v", *(["-s"] if trace else []), stdin=asyncio.subprocess.DEVNULL,
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
        await asyncio.sleep(0.1)  # well past mwi's 1 ms start-up timer (MWI_START_UP)
        resp = await phone.command("uanew", account_line(user, f"pw{user}", server_port, mwi, transport))
        assert resp["ok"], resp
        await phone.event("REGISTER_OK", timeout=5)
        yield phone
    finally:
        if phone is not None:
            await phone.stop()
            (home / "baresip.log").write_bytes(phone.output)  # the whole log, for a post-mortem
            print(phone.log(8000))  # shown by pytest when the test fails
        else:
            if proc.returncode is None:
                proc.kill()
            out, _ = await within(proc.communicate(), 5)
            print(out.decode(errors="replace")[-4000:])
