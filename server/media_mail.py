"""Voicemail to e-mail: a deposit is mailed to the account's address with the WAV attached.

smtplib is run in a thread (one message at a time per deposit; a slow or dead mail server never
holds up the 20 ms media clock). A failure is logged and counted; the message stays in the mailbox.
"""

from __future__ import annotations

import asyncio
import smtplib
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from server.media_settings import SmtpSettings

log = structlog.get_logger("sipcore.media.mail")


def voicemail_email(
    *,
    sender: str,
    to: str,
    extension: str,
    caller: str,
    start: float,
    duration: float,
    wav: bytes,
    tz: ZoneInfo,
) -> EmailMessage:
    when = datetime.fromtimestamp(start, tz)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"New voicemail for {extension} from {caller or 'unknown caller'} ({round(duration)} s)"
    msg["Date"] = formatdate(start, localtime=False)
    msg["Message-ID"] = make_msgid(domain="sipcore")
    msg.set_content(
        f"You have a new voicemail message.\n\n"
        f"From:     {caller or 'unknown caller'}\n"
        f"Mailbox:  {extension}\n"
        f"Received: {when:%Y-%m-%d %H:%M:%S %Z}\n"
        f"Length:   {duration:.1f} s\n\n"
        f"The recording is attached (8 kHz mono WAV). Dial 2222 to hear it from your phone.\n"
    )
    name = f"voicemail-{when:%Y%m%d-%H%M%S}-{caller or 'unknown'}.wav"
    msg.add_attachment(wav, maintype="audio", subtype="wav", filename=name)
    return msg


def _send(settings: SmtpSettings, msg: EmailMessage) -> None:
    with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout) as smtp:
        if settings.starttls:
            smtp.starttls()
        if settings.username and settings.password:
            smtp.login(settings.username, settings.password)
        smtp.send_message(msg)


class Mailer:
    """Sends voicemail notifications; ``sent`` / ``failed`` count them (tests and metrics)."""

    def __init__(self, settings: SmtpSettings, tz: ZoneInfo) -> None:
        self.settings = settings
        self.tz = tz
        self.sent = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, to: str, extension: str, caller: str, start: float, duration: float, wav: Path) -> None:
        task = asyncio.get_running_loop().create_task(
            self._notify(to, extension, caller, start, duration, wav)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(
        self, to: str, extension: str, caller: str, start: float, duration: float, wav: Path
    ) -> None:
        try:
            data = await asyncio.to_thread(wav.read_bytes)
            msg = voicemail_email(sender=self.settings.sender, to=to, extension=extension, caller=caller,
                                  start=start, duration=duration, wav=data, tz=self.tz)  # fmt: skip
            await asyncio.to_thread(_send, self.settings, msg)
        except (OSError, smtplib.SMTPException) as exc:
            self.failed += 1
            log.warning("voicemail_email_failed", to=to, error=str(exc))
            return
        self.sent += 1
        log.info("voicemail_emailed", to=to, extension=extension)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
