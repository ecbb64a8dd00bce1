"""What the media service needs from the YAML, read once per (re)load into plain frozen values."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from config.model import Config


@dataclass(frozen=True, slots=True)
class MailboxOwner:
    """An account with voicemail, as the service names it in Request-URIs (``demo-1001``)."""

    box: str
    account_id: str
    customer_id: str
    extension: str
    aor: str  # sip:<username>@<domain>: Message-Account of its MWI
    pin: str | None
    email: str | None
    voicemail: bool


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    starttls: bool
    username: str | None
    password: str | None
    sender: str
    timeout: float


@dataclass(frozen=True, slots=True)
class MediaSettings:
    sip_host: str  # where the service's SIP socket listens (proxy.media_service)
    sip_port: int
    proxy: tuple[str, int]  # where unsolicited NOTIFYs go (the proxy's UDP listener)
    trusted: frozenset[str]  # source IPs allowed to send us requests (the proxy's)
    rtp_address: str
    rtp_ports: tuple[int, int]
    rtp_timeout: float
    state_dir: Path
    prompts: Path | None
    max_messages: int
    max_message_seconds: float
    min_message_seconds: float
    silence_seconds: float
    max_greeting_seconds: float
    timezone: ZoneInfo
    mwi_refresh: float
    max_participants: int
    smtp: SmtpSettings | None
    owners: Mapping[str, MailboxOwner] = field(default_factory=dict)
    conference_pins: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # customer -> pin -> room


def box_name(account_id: str) -> str:
    """The Request-URI form of an account id (the controller writes ``demo/1001`` as ``demo-1001``)."""
    return account_id.replace("/", "-")


def _proxy_address(cfg: Config) -> tuple[str, int]:
    udp = cfg.server.listen.udp[0]
    host = udp.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return (host, udp.port)


def _trusted(cfg: Config) -> frozenset[str]:
    """The proxy's own addresses: its listen IPs (any local address when it listens on all)."""
    out = {"127.0.0.1", "::1"}
    for addr in (*cfg.server.listen.udp, *cfg.server.listen.tcp):
        host = addr.host
        if host in ("0.0.0.0", "::"):
            out.update(_interface_addresses())
        else:
            out.add(host)
    out.update(h for h in cfg.local_hosts if _is_ip(h))
    return frozenset(out)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _interface_addresses() -> set[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return set()
    return {str(info[4][0]) for info in infos}


def media_settings(cfg: Config) -> MediaSettings | None:
    """None when the proxy names no media service."""
    media = cfg.file.media
    target = cfg.proxy.media_service
    if target is None:
        return None
    vm = media.voicemail
    owners: dict[str, MailboxOwner] = {}
    pins: dict[str, dict[str, str]] = {}
    for customer in cfg.customers:
        domain = customer.domains[0]
        for acc in customer.accounts:
            account_id = f"{customer.id}/{acc.extension}"
            owners[box_name(account_id)] = MailboxOwner(
                box=box_name(account_id), account_id=account_id, customer_id=customer.id,
                extension=acc.extension, aor=f"sip:{acc.username}@{domain}", pin=acc.voicemail_pin,
                email=acc.email, voicemail=acc.voicemail,
            )  # fmt: skip
        if customer.conference_pins:
            pins[customer.id] = dict(customer.conference_pins)
    smtp = None
    if media.smtp is not None:
        s = media.smtp
        smtp = SmtpSettings(s.host, s.port, s.starttls, s.username, s.password, s.sender, float(s.timeout))
    return MediaSettings(
        sip_host=target.host, sip_port=target.port or 5080, proxy=_proxy_address(cfg), trusted=_trusted(cfg),
        rtp_address=media.rtp_address, rtp_ports=media.rtp_ports, rtp_timeout=float(media.rtp_timeout),
        state_dir=cfg.paths.state_dir, prompts=Path(media.prompts) if media.prompts else None,
        max_messages=vm.max_messages, max_message_seconds=float(vm.max_message_seconds),
        min_message_seconds=float(vm.min_message_seconds), silence_seconds=float(vm.silence_seconds),
        max_greeting_seconds=float(vm.max_greeting_seconds), timezone=ZoneInfo(vm.timezone),
        mwi_refresh=float(vm.mwi_refresh), max_participants=media.conference.max_participants,
        smtp=smtp, owners=owners, conference_pins=pins,
    )  # fmt: skip
