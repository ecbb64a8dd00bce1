"""RTP endpoints of the media service: one UDP socket per call leg, from a configured port range.

The protocol state is pure (media.rtp.RtpStream latches and counts, media.dtmf.DtmfReceiver reads
key presses, media.rtp.RtpPacketiser numbers what we send); this module only binds sockets, decodes
G.711 into a small arrival queue that the 20 ms clock of the service drains one frame per tick, and
sends to wherever the phone's RTP really comes from (symmetric RTP, for phones behind NAT).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections import deque
from collections.abc import Callable

from media.app import FRAME_BYTES, SILENT_FRAME
from media.dtmf import DtmfError, DtmfReceiver
from media.g711 import DECODERS, ENCODERS
from media.rtp import RtpError, RtpPacketiser, RtpReceived, RtpStream
from media.sdp import NegotiatedAudio

QUEUE_FRAMES = 8  # 160 ms of audio waiting at most; older frames are dropped (the phone sent a burst)


class PortPool:
    """Even ports of ``[low, high]`` (RTP even, RTCP the odd one above, RFC 3550 §11), handed out
    round-robin so a port just freed is not reused at once (a late packet of the old call)."""

    def __init__(self, low: int, high: int) -> None:
        first = low + (low & 1)
        self._ports: deque[int] = deque(range(first, high, 2))
        self._used: set[int] = set()

    def __len__(self) -> int:
        return len(self._ports)

    def bind(self, host: str) -> tuple[socket.socket, int]:
        """A bound UDP socket on the next free port; OSError when every port is taken."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(len(self._ports)):
            port = self._ports.popleft()
            self._ports.append(port)
            if port in self._used:
                continue
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            self._used.add(port)
            return sock, port
        raise OSError("no free RTP port in the configured range")

    def release(self, port: int) -> None:
        self._used.discard(port)


class RtpEndpoint(asyncio.DatagramProtocol):
    """One call leg's RTP: received audio queued as linear PCM frames, DTMF handed to ``on_digit``."""

    def __init__(
        self,
        audio: NegotiatedAudio,
        now: float,
        inactivity_timeout: float,
        on_digit: Callable[[str], None],
    ) -> None:
        pts = {audio.payload_type}
        if audio.dtmf_payload_type is not None:
            pts.add(audio.dtmf_payload_type)
        self.audio = audio
        self.stream = RtpStream(payload_types=pts, remote=audio.remote, now=now,
                                inactivity_timeout=inactivity_timeout)  # fmt: skip
        self.dtmf = DtmfReceiver()
        self.decode = DECODERS[audio.codec.name.upper()]
        self.encode = ENCODERS[audio.codec.name.upper()]
        self.packetiser = RtpPacketiser(payload_type=audio.payload_type, ssrc=secrets.randbits(32),
                                        sequence=secrets.randbits(16), timestamp=secrets.randbits(32))  # fmt: skip
        self.frames: deque[bytes] = deque(maxlen=QUEUE_FRAMES)
        self.on_digit = on_digit
        self.transport: asyncio.DatagramTransport | None = None
        self.clock: Callable[[], float] = lambda: now
        self._partial = b""
        self._silence = self.encode(SILENT_FRAME)

    # asyncio -----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        try:
            event = self.stream.on_datagram(data, (addr[0], addr[1]), self.clock())
        except RtpError:
            return
        if type(event) is not RtpReceived or event.late:
            return
        packet = event.packet
        if packet.payload_type == self.audio.dtmf_payload_type:
            try:
                digit = self.dtmf.on_payload(packet.ssrc, packet.timestamp, packet.payload)
            except DtmfError:
                return
            if digit is not None:
                self.on_digit(digit.digit)
            return
        pcm = self.decode(packet.payload)
        if len(pcm) != FRAME_BYTES:  # another packetisation (10 or 30 ms): re-cut into 20 ms frames
            self._recut(pcm)
        else:
            self.frames.append(pcm)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: the phone went away
        pass

    # the service's clock -----------------------------------------------------------------------
    def next_frame(self) -> bytes | None:
        """The oldest received frame, or None when nothing arrived in time."""
        frames = self.frames
        return frames.popleft() if frames else None

    def send(self, pcm: bytes) -> None:
        """Encode and send one 20 ms frame to where the phone's RTP comes from."""
        transport = self.transport
        if transport is None or not self.audio.may_send:
            self.packetiser.pause()
            return
        # most frames a service sends are silence (it is listening): encoded once per call
        payload = self._silence if pcm == SILENT_FRAME else self.encode(pcm)
        transport.sendto(self.packetiser.audio_bytes(payload), self.stream.remote)

    def update(self, audio: NegotiatedAudio) -> None:
        """A re-INVITE moved or held the media: send to the new place and relatch."""
        self.audio = audio
        self.encode = ENCODERS[audio.codec.name.upper()]
        self._silence = self.encode(SILENT_FRAME)
        self.stream.relatch(audio.remote)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def _recut(self, pcm: bytes) -> None:
        data = self._partial + pcm
        while len(data) >= FRAME_BYTES:
            self.frames.append(data[:FRAME_BYTES])
            data = data[FRAME_BYTES:]
        self._partial = data
