"""Fixtures: the media service on free loopback ports (alone, as the proxy sees it), or the whole
platform (registrar + proxy + media service) for calls that phones place through the proxy."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from config.loader import load_config
from server.app import Application, load_application_config
from server.media_app import build_media_service
from server.media_service import MediaService
from server.media_settings import media_settings
from tests.conftest import free_port
from tests.media_sip.phone import MediaPhone

DOMAIN = "demo.sipcore.test"


def media_yaml(
    port: int, media_port: int, state_dir: Path, extra_media: str = "", rtp_timeout: int = 30
) -> str:
    low = random.randrange(30000, 39000, 2)
    return f"""\
default_domain: {DOMAIN}
server:
  listen: {{udp: ["127.0.0.1:{port}"], tcp: ["127.0.0.1:{port}"]}}
  advertised_address: 127.0.0.1:{port}
  local_addresses: [127.0.0.1, localhost]
  metrics: null
  log: {{format: json, level: warning}}
  state_dir: {state_dir}
registrar:
  realm: {DOMAIN}
  nonce_secret: media-sip-tests-secret-0123456789
  guard: {{failure_threshold: 50, window: 60, ban_time: 60}}
  location: {{backend: memory, state_file: null}}
proxy:
  media_service: 127.0.0.1:{media_port}
  no_answer_timeout: 2
media:
  rtp_ports: {low}-{low + 400}
  rtp_timeout: {rtp_timeout}
  voicemail: {{silence_seconds: 2, max_message_seconds: 20, timezone: Europe/Paris}}
{extra_media}
rating:
  rate_tables: {{t: rates.csv}}
  packages:
    p: {{rate_table: t, pulse: 60}}
customers:
  - id: demo
    name: Demo SARL
    reference: CUST-0001
    country: FR
    domains: [{DOMAIN}]
    internal: true
    default_package: p
    dids:
      - {{number: "+33184000001", to: "1001"}}
      - {{number: "+33184000070", to: "voicemail:1001"}}
      - {{number: "+33184000080", to: conference}}
    conference_pins: {{}}
    accounts:
      - {{extension: "1001", username: "1001", password: pw1001, voicemail: true, email: alice@example.test}}
      - {{extension: "1002", username: "1002", password: pw1002, voicemail: true, voicemail_pin: "4321"}}
      - {{extension: "1003", username: "1003", password: pw1003}}
      - {{extension: "1004", username: "1004", password: pw1004, voicemail: true}}
      - {{extension: "1005", username: "1005", password: pw1005, voicemail: true,
         forwarding: {{no_answer: {{delay: 1, voicemail: true}}}}}}
      - {{extension: "1006", username: "1006", password: pw1006, voicemail: true}}
      - {{extension: "1007", username: "1007", password: pw1007, voicemail: true,
         follow_me: {{destinations: [{{to: "1003", ring_time: 1}}], voicemail: true}}}}
  - id: club
    name: Club SAS
    reference: CUST-0002
    country: FR
    domains: [club.sipcore.test]
    internal: true
    default_package: p
    conference_pins: {{"1111": red, "2222": blue}}
    accounts:
      - {{extension: "2001", username: "2001", password: pw2001}}
"""


def write_media_config(directory: Path, port: int, media_port: int, **kwargs: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rates.csv").write_text(
        "prefix,destination,category,cost_per_minute\n+33,France,fixed,0.01\n"
    )
    path = directory / "media.yaml"
    path.write_text(media_yaml(port, media_port, directory / "state", **kwargs), encoding="utf-8")  # type: ignore[arg-type]
    return path


@dataclass
class MediaRig:
    service: MediaService
    phones: list[MediaPhone] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.service.port)

    async def phone(self, user: str = "proxy", host: str = "127.0.0.1") -> MediaPhone:
        phone = await MediaPhone.open_media(user, "", self.address, host)
        self.phones.append(phone)
        return phone


@contextlib.asynccontextmanager
async def media_rig(directory: Path, **kwargs: object) -> AsyncIterator[MediaRig]:
    path = write_media_config(directory, free_port(), free_port(), **kwargs)
    settings = media_settings(load_config(path))
    assert settings is not None
    service = build_media_service(settings)
    await service.start()
    rig = MediaRig(service)
    try:
        yield rig
    finally:
        for phone in rig.phones:
            phone.close()
        await service.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[MediaRig]:
    async with media_rig(tmp_path) as running:
        yield running


@dataclass
class Platform:
    """Registrar + proxy + media service, as ``sipcore serve`` runs them (media in-process here)."""

    app: Application
    media: MediaService
    port: int
    phones: list[MediaPhone] = field(default_factory=list)

    async def phone(self, extension: str, register: bool = True, domain: str = DOMAIN) -> MediaPhone:
        phone = await MediaPhone.open_media(extension, f"pw{extension}", ("127.0.0.1", self.port))
        phone.domain = domain
        self.phones.append(phone)
        if register:
            await phone.register()
        return phone


@contextlib.asynccontextmanager
async def media_platform(directory: Path, **kwargs: object) -> AsyncIterator[Platform]:
    port, media_port = free_port(), free_port()
    path = write_media_config(directory, port, media_port, **kwargs)
    loaded = load_application_config(str(path))
    settings = media_settings(loaded.config)
    assert settings is not None
    media = build_media_service(settings)
    await media.start()
    app = Application(loaded)
    await app.start()
    running = Platform(app, media, port)
    try:
        yield running
    finally:
        for phone in running.phones:
            phone.close()
        await app.close()
        await media.close()
