"""Fixtures: the whole `Application` (registrar + proxy) on free loopback ports, a carrier trunk UA on
127.0.0.2, and phones that register before they are called. Every UA and the app are closed after
each test; CallEnded events are collected for assertions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from calls.call_ended import CallEnded
from server.app import Application, load_application_config
from tests.conftest import free_port
from tests.proxy_sip.configs import DOMAIN, TRUNK_HOST, password, write_config
from tests.proxy_sip.ua import Ua


@dataclass
class Platform:
    """A running proxy with its trunk UA; ``phone()`` opens and registers phones."""

    app: Application
    port: int
    trunk: Ua
    uas: list[Ua] = field(default_factory=list)
    ended: list[CallEnded] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def phone(
        self,
        extension: str,
        mode: str = "answer",
        register: bool = True,
        domain: str = DOMAIN,
        tcp: bool = False,
    ) -> Ua:
        opener = Ua.open_tcp if tcp else Ua.open
        ua = await opener(extension, password(extension), self.address)
        ua.mode = mode
        ua.domain = domain
        self.uas.append(ua)
        if register:
            await ua.register()
        return ua


@contextlib.asynccontextmanager
async def platform(
    directory: Path, trunk_port: int | None = None, **config: float | str
) -> AsyncIterator[Platform]:
    """``trunk_port``: point the carrier trunk at that port on 127.0.0.2 (a SIPp UAS) instead of the
    Python trunk UA."""
    port = free_port()
    trunk = await Ua.open("carrier", "", ("127.0.0.1", port), host=TRUNK_HOST)
    loaded = load_application_config(str(write_config(directory, port, trunk_port or trunk.port, **config)))
    app = Application(loaded)
    await app.start()
    running = Platform(app, port, trunk)
    app.proxy.call_ended_sinks.append(running.ended.append)
    try:
        yield running
    finally:
        for ua in running.uas:
            ua.close()
        trunk.close()
        await app.close()


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Platform]:
    async with platform(tmp_path) as running:
        yield running
