"""The media service as a process: ``sipcore media`` (``sipcore serve`` starts it as a child).

A separate process because it owns the mailboxes (one writer per store), keeps its 20 ms clock on a
loop of its own whatever ``server.workers`` is, and a fault in it never takes the proxy down.
SIGHUP reloads the YAML (a bad file is refused and the running settings kept); SIGTERM hangs up
every call (BYE) and exits.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from media.mailbox import MailboxStore
from media.prompts import PromptSet
from server.media_mail import Mailer
from server.media_service import MediaService
from server.media_settings import MediaSettings, media_settings

log = structlog.get_logger("sipcore.media")


def build_media_service(settings: MediaSettings) -> MediaService:
    prompts = PromptSet.load(settings.prompts) if settings.prompts else PromptSet.default()
    store = MailboxStore.in_state_dir(settings.state_dir, max_messages=settings.max_messages,
                                      max_message_seconds=settings.max_message_seconds)  # fmt: skip
    mailer = Mailer(settings.smtp, settings.timezone) if settings.smtp is not None else None
    return MediaService(settings, prompts, store, mailer)


async def run_media(path: str | None) -> int:
    from config.loader import ConfigError, load_config

    try:
        cfg = load_config(path) if path else load_config(None)
    except ConfigError as exc:
        print(str(exc))
        return 1
    settings = media_settings(cfg)
    if settings is None:
        print("proxy.media_service is not set: no media service to run")
        return 1
    service = build_media_service(settings)
    try:
        await service.start()
    except OSError as exc:
        log.error("media_cannot_listen", address=f"{settings.sip_host}:{settings.sip_port}", error=str(exc))
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        try:
            new = media_settings(load_config(path) if path else load_config(None))
        except ConfigError as exc:
            log.error("media_reload_refused", errors=str(exc))
            return
        if new is not None:
            service.update(new)
            log.info("media_reloaded")

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    await service.close()
    return 0
