"""Voicemail to e-mail against a real SMTP server (aiosmtpd on loopback): the deposit arrives as a
mail to the account's address with the message's WAV attached, byte for byte; a dead mail server
loses nothing (the message stays in the mailbox, the failure is counted)."""

from __future__ import annotations

import asyncio
import email
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

from aiosmtpd.controller import Controller

from tests.conftest import free_port
from tests.media_sip.conftest import media_rig
from tests.media_sip.test_media_service import BOX, deposit


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


async def test_deposit_is_mailed_with_the_wav(tmp_path: Path) -> None:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        smtp = f"  smtp: {{host: 127.0.0.1, port: {port}, sender: vm@pbx.example}}\n"
        async with media_rig(tmp_path, extra_media=smtp) as rig:
            phone = await rig.phone()
            await deposit(rig, phone, caller="1002", seconds=1.5)
            for _ in range(50):
                if sink.messages:
                    break
                await asyncio.sleep(0.1)
            assert rig.service.mailer is not None and rig.service.mailer.sent == 1
            (msg,) = rig.service.store.messages(BOX)
            wav = msg.path.read_bytes()
    finally:
        controller.stop()
    (mail_from, rcpt, content) = sink.messages[0]
    assert mail_from == "vm@pbx.example" and rcpt == ["alice@example.test"]
    parsed = email.message_from_bytes(content, policy=default)
    assert isinstance(parsed, EmailMessage)
    assert "1002" in parsed["Subject"] and "1001" in parsed["Subject"]
    attachments = list(parsed.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_content_type() == "audio/wav"
    assert attachments[0].get_content() == wav


async def test_a_dead_mail_server_keeps_the_message(tmp_path: Path) -> None:
    smtp = f"  smtp: {{host: 127.0.0.1, port: {free_port()}, timeout: 2}}\n"  # nothing listens there
    async with media_rig(tmp_path, extra_media=smtp) as rig:
        phone = await rig.phone()
        await deposit(rig, phone, caller="1002", seconds=1.0)
        for _ in range(50):
            if rig.service.mailer is not None and rig.service.mailer.failed:
                break
            await asyncio.sleep(0.1)
        assert rig.service.mailer is not None and rig.service.mailer.failed == 1
        assert len(rig.service.store.messages(BOX)) == 1
