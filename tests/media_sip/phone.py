"""A scripted phone with a voice: the proxy tests' SIP user agent plus an RTP socket that sends
20 ms G.711 frames in real time (tones, silence, RFC 4733 key presses) and keeps what it hears.

It calls either the media service directly, as the proxy does (``invite_service``), or through the
proxy like any phone (``call``: digest challenge answered).
"""

from __future__ import annotations

import asyncio
import secrets

from media.dtmf import digit_event, tone_payloads
from media.g711 import ulaw_decode, ulaw_encode
from media.rtp import RtpPacket, RtpPacketiser
from media.tones import goertzel_power, samples_of, sine
from sipcore.message import Request, Response
from tests.proxy_sip.ua import Dialog, Ua

DTMF_PT = 101


class RtpSide(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.packets: list[tuple[float, RtpPacket]] = []
        self.remote: tuple[str, int] | None = None
        self.packetiser = RtpPacketiser(payload_type=0, ssrc=secrets.randbits(32), sequence=secrets.randbits(16),
                                        timestamp=secrets.randbits(32))  # fmt: skip

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        self.packets.append((asyncio.get_running_loop().time(), packet))


class MediaPhone(Ua):
    """``offer`` codecs: PCMU, PCMA and telephone-event, like most desk phones."""

    rtp: RtpSide
    rtp_port: int

    @classmethod
    async def open_media(
        cls, user: str, password: str, server: tuple[str, int], host: str = "127.0.0.1"
    ) -> MediaPhone:
        phone = await cls.open(user, password, server, host)
        assert isinstance(phone, MediaPhone)
        loop = asyncio.get_running_loop()
        _, rtp = await loop.create_datagram_endpoint(RtpSide, local_addr=(host, 0))
        phone.rtp = rtp
        assert rtp.transport is not None
        phone.rtp_port = rtp.transport.get_extra_info("sockname")[1]
        return phone

    def close(self) -> None:
        super().close()
        if getattr(self, "rtp", None) is not None and self.rtp.transport is not None:
            self.rtp.transport.close()

    def offer(self) -> str:
        return (
            f"v=0\no=phone 1 1 IN IP4 {self.host}\ns=-\nc=IN IP4 {self.host}\nt=0 0\n"
            f"m=audio {self.rtp_port} RTP/AVP 0 8 {DTMF_PT}\na=rtpmap:{DTMF_PT} telephone-event/8000\n"
            f"a=fmtp:{DTMF_PT} 0-16\na=ptime:20\na=sendrecv\n"
        )

    # ---- signalling ------------------------------------------------------------------------------
    def _serve(self, req: Request, addr: tuple[str, int]) -> None:
        if req.method == "NOTIFY":
            self._answer(req, 200, "OK", addr)
            return
        super()._serve(req, addr)

    def invite(self, dialed: str, cseq: int = 1, auth: str = "", call_id: str | None = None,
               from_tag: str | None = None) -> Dialog:  # fmt: skip
        """The proxy tests' INVITE, carrying a real SDP offer (our RTP port)."""
        dlg = Dialog(call_id or secrets.token_hex(8), from_tag or secrets.token_hex(4), dialed, cseq,
                     "z9hG4bK" + secrets.token_hex(6))  # fmt: skip
        dlg.from_header = f"<sip:{self.user}@{self.domain}>;tag={dlg.from_tag}"
        body = self.offer()
        dlg.invite_text = (
            f"INVITE sip:{dialed}@{self.domain} SIP/2.0\nVia: {self._via(dlg.branch)}\nMax-Forwards: 70\n"
            f"From: {dlg.from_header}\nTo: <sip:{dialed}@{self.domain}>\n"
            f"Call-ID: {dlg.call_id}\nCSeq: {cseq} INVITE\nContact: {self.contact}\n{auth}"
            f"Content-Type: application/sdp\nContent-Length: {_crlf_len(body)}\n\n{body}"
        )
        self.send(dlg.invite_text)
        return dlg

    async def invite_service(
        self, service: str, caller: str | None = None, timeout: float = 3.0
    ) -> tuple[Dialog, Response]:
        """INVITE the media service directly (as the proxy would), with a P-Asserted-Identity."""
        host, port = self.server
        ruri = f"sip:{service}@{host}:{port}"
        dlg = Dialog(secrets.token_hex(8), secrets.token_hex(4), service, 1, "z9hG4bK" + secrets.token_hex(6))
        dlg.from_header = f"<sip:{self.user}@{self.domain}>;tag={dlg.from_tag}"
        pai = f"P-Asserted-Identity: <sip:{caller}@{self.domain}>\n" if caller else ""
        body = self.offer()
        text = (
            f"INVITE {ruri} SIP/2.0\nVia: {self._via(dlg.branch)}\nMax-Forwards: 70\n"
            f"From: {dlg.from_header}\nTo: <{ruri}>\nCall-ID: {dlg.call_id}\nCSeq: 1 INVITE\n"
            f"Contact: {self.contact}\n{pai}Content-Type: application/sdp\n"
            f"Content-Length: {_crlf_len(body)}\n\n{body}"
        )
        self.send(text)
        resp = await self.response(dlg.call_id, final=True, timeout=timeout)
        if resp.status == 200:
            self.ack(dlg, resp)
            self.start_media(resp)
        return dlg, resp

    def start_media(self, resp: Response) -> None:
        from media.sdp import parse

        answer = parse(resp.body)
        audio = answer.media[0]
        conn = answer.connection_for(audio)
        assert conn is not None
        self.rtp.remote = (conn.address, audio.port)

    async def wait_bye(self, call_id: str, timeout: float = 10.0) -> Request:
        msg = await self.expect(lambda m: isinstance(m, Request) and m.method == "BYE" and m.call_id == call_id,
                                timeout=timeout, what="BYE")  # fmt: skip
        assert isinstance(msg, Request)
        return msg

    # ---- media -----------------------------------------------------------------------------------
    async def play(self, pcm: bytes, realtime: bool = True) -> None:
        """Send linear PCM as 20 ms PCMU packets, paced like a phone."""
        assert self.rtp.transport is not None and self.rtp.remote is not None
        loop = asyncio.get_running_loop()
        due = loop.time()
        for i in range(0, len(pcm) - 319, 320):
            packet = self.rtp.packetiser.audio(ulaw_encode(pcm[i : i + 320]))
            self.rtp.transport.sendto(packet.to_bytes(), self.rtp.remote)
            due += 0.02
            if realtime:
                await asyncio.sleep(max(0.0, due - loop.time()))

    async def tone(self, freq: float, seconds: float, dbov: float = -12.0) -> None:
        await self.play(sine(freq, int(seconds * 1000), dbov))

    async def silence(self, seconds: float) -> None:
        await self.play(bytes(int(seconds * 8000) * 2))

    async def press(self, digit: str) -> None:
        """One key press as RFC 4733 events (start, updates, three ends), then 60 ms of silence."""
        assert self.rtp.transport is not None and self.rtp.remote is not None
        payloads = tone_payloads(digit_event(digit), 800)
        packets = self.rtp.packetiser.event(DTMF_PT, payloads, 800)
        for packet in packets:
            self.rtp.transport.sendto(packet.to_bytes(), self.rtp.remote)
            await asyncio.sleep(0.02)
        await self.silence(0.06)

    def heard(self, since: float = 0.0) -> bytes:
        """Linear PCM of every audio packet received after ``since`` (loop time), in order of arrival."""
        return b"".join(
            ulaw_decode(p.payload) for t, p in self.rtp.packets if t >= since and p.payload_type == 0
        )

    def loop_time(self) -> float:
        return asyncio.get_running_loop().time()


def power(pcm: bytes, freq: float) -> float:
    """Goertzel power of ``freq`` over the whole clip, per sample (comparable across lengths)."""
    samples = samples_of(pcm)
    return goertzel_power(samples, freq) / max(1, len(samples)) if samples else 0.0


def _crlf_len(text: str) -> int:
    """Length once ``Ua.send`` has turned each LF into CRLF."""
    return len(text) + text.count("\n")
