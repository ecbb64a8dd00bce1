"""Fixtures: the whole Application with TLS, WS and WSS listeners beside UDP/TCP (the proxy wire tests'
configuration, tests/proxy_sip/configs.py), with test certificates; phones over TLS."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.app import Application, load_application_config
from sipcore.waiting import within
from tests.conftest import free_port
from tests.proxy_sip.configs import TRUNK_HOST, password, write_config
from tests.proxy_sip.ua import Ua
from tests.secure_sip.certs import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.check_hostname = False  # the server is reached by address; its certificate names 127.0.0.1 too
    return ctx


class TlsUa(Ua):
    """The proxy tests' UA over one TLS connection (Via SIP/2.0/TLS, Contact ;transport=tls)."""

    @classmethod
    async def open_tls(cls, user: str, pwd: str, server: tuple[str, int], ctx: ssl.SSLContext) -> TlsUa:
        import asyncio

        ua = cls(user, pwd, server)
        reader, ua._writer = await within(asyncio.open_connection(*server, ssl=ctx), 3)
        ua.port = ua._writer.get_extra_info("sockname")[1]
        ua._reader_task = asyncio.get_running_loop().create_task(ua._read_stream(reader))
        return ua

    @property
    def transport(self) -> str:
        return "TLS"

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.host}:{self.port};transport=tls>"


@dataclass
class SecurePlatform:
    app: Application
    port: int  # UDP and TCP
    tls_port: int
    ws_port: int
    wss_port: int
    trunk: Ua
    pki: Pki

    async def tls_phone(self, extension: str, register: bool = True) -> TlsUa:
        ua = await TlsUa.open_tls(extension, password(extension), ("127.0.0.1", self.tls_port),
                                  client_context(self.pki))  # fmt: skip
        if register:
            await ua.register()
        return ua


def tls_yaml(pki: Pki, tls_port: int, ws_port: int, wss_port: int, extra: str = "") -> str:
    return (
        f"  tls:\n    listen: [127.0.0.1:{tls_port}]\n    cert_file: {pki.cert}\n    key_file: {pki.key}\n"
        f"    handshake_timeout: 2\n{extra}"
        f"  websocket: {{listen: [127.0.0.1:{ws_port}], tls_listen: [127.0.0.1:{wss_port}]}}\n"
    )


@contextlib.asynccontextmanager
async def secure_platform(directory: Path, pki: Pki, trunk_port: int | None = None, workers_tls: str = "",
                          edit: Callable[[str], str] | None = None, **config: float | str,
                          ) -> AsyncIterator[SecurePlatform]:  # fmt: skip
    port, tls_port, ws_port, wss_port = free_port(), free_port(), free_port(), free_port()
    trunk = await Ua.open("carrier", "", ("127.0.0.1", port), host=TRUNK_HOST)
    path = write_config(directory, port, trunk_port or trunk.port, **config)
    text = path.read_text()
    text = text.replace("  advertised_address:", tls_yaml(pki, tls_port, ws_port, wss_port, workers_tls)
                        + "  advertised_address:", 1)  # fmt: skip
    path.write_text(edit(text) if edit is not None else text)
    app = Application(load_application_config(str(path)))
    await app.start()
    try:
        yield SecurePlatform(app, port, tls_port, ws_port, wss_port, trunk, pki)
    finally:
        trunk.close()
        await app.close()


@pytest.fixture
async def secure(tmp_path: Path, pki: Pki) -> AsyncIterator[SecurePlatform]:
    async with secure_platform(tmp_path, pki) as running:
        yield running
