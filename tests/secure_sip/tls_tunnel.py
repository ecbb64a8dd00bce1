"""SIPp over TLS: Debian's SIPp is built without TLS (``-t l1`` is missing), so SIPp speaks TCP
(``-t t1``) to a local ``socat`` that carries the bytes over a real TLS connection to the server,
verifying its certificate against the test CA. The scenarios say ``SIP/2.0/TLS`` and
``transport=tls`` (``tls_scenario``), so the server sees exactly what a TLS phone sends."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from tests.conftest import free_port

PROXY_SIP = Path(__file__).resolve().parents[1] / "proxy_sip"


def socat_binary() -> str | None:
    return shutil.which("socat")


def tls_scenario(name: str, directory: Path, server: str) -> Path:
    """tests/proxy_sip/<name> with its Via and Contact transports set to TLS and the server's TLS
    address (``server``, not the tunnel's) in its URIs (an absolute path)."""
    text = (PROXY_SIP / name).read_text(encoding="iso-8859-1").replace("[remote_ip]:[remote_port]", server)
    text = text.replace("SIP/2.0/[transport]", "SIP/2.0/TLS").replace(
        "transport=[transport]", "transport=tls"
    )
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"tls_{name}"
    out.write_text(text, encoding="iso-8859-1")
    return out


@contextlib.asynccontextmanager
async def tls_tunnel(tls_port: int, ca: Path) -> AsyncIterator[int]:
    """A local TCP port whose every connection socat carries over TLS to 127.0.0.1:tls_port."""
    binary = socat_binary()
    assert binary is not None
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
        f"OPENSSL:127.0.0.1:{tls_port},cafile={ca},commonname=localhost,verify=1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:  # listening yet?
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()  # socat forks a child for it, which finds EOF and ends
                break
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        yield port
    finally:
        if proc.returncode is None:
            proc.kill()  # the listener; its per-connection children end with their connections
        await proc.wait()
