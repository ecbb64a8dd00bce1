"""The media service: the SIP user agent behind ``proxy.media_service`` (voicemail deposit, the
mailbox menu on 2222, conference rooms on 2020, message waiting).

It answers the INVITEs the proxy sends to ``sip:<service>-<key>@<media>``: ``voicemail-<box>``
(leave a message), ``mailbox-<box>`` (the owner's menu), ``conference-<room>``. Each answered call
gets an RTP endpoint (``server/media_rtp.py``) and a pure application from ``media/`` (voicemail,
menu, conference) that one 20 ms clock drives for every call: received frame in, frame out, events
(store a message, mark it heard, hang up) carried out here. Message waiting: phones that SUBSCRIBE
to ``message-summary`` get NOTIFYs in their dialog; for the others an unsolicited NOTIFY goes to the
proxy, which hands a copy to every registered contact of the account.

Only the proxy may talk to the service (its addresses are ``MediaSettings.trusted``): the proxy has
authenticated the caller and asserted who it is, and the Request-URI it chose names the mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from media import sdp
from media.app import (
    DeleteGreeting,
    DeleteMessage,
    Hangup,
    MarkHeard,
    RecordingEnded,
    RecordingStarted,
)
from media.conference import Room, RoomEntry, Rooms
from media.dtmf import DtmfError, parse_dtmf_relay
from media.mailbox import DepositRefused, MailboxStore, UnknownMessage
from media.menu import Retrieval
from media.mwi import CONTENT_TYPE as MWI_TYPE
from media.mwi import EVENT as MWI_EVENT
from media.mwi import MessageSummary
from media.prompts import PromptSet
from media.tones import beep
from media.voicemail import Deposit
from media.wav import WavWriter, read_wav
from server.media_mail import Mailer
from server.media_rtp import PortPool, RtpEndpoint
from server.media_settings import MailboxOwner, MediaSettings
from server.media_sip import Address, SipSocket
from sipcore.errors import SipParseError
from sipcore.headers import NameAddr
from sipcore.message import Headers, Request, new_tag
from sipcore.proxy import target_uri_of
from sipcore.transport import join_hostport
from sipcore.uri import SipUri
from sipcore.waiting import Background, cancel_and_wait

log = structlog.get_logger("sipcore.media")

FRAME = 0.02
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, SUBSCRIBE, NOTIFY"
MAX_SUBSCRIPTION = 3600
LATE_AFTER = 0.02  # a frame sent more than one frame period after its due time counts as late


@dataclass(slots=True)
class Dialog:
    """Our side of one dialog (we are always the UAS: the proxy or a phone started it)."""

    call_id: str
    local: str  # our From value in requests we send (their To, with our tag)
    remote: str  # their From value, with their tag
    target: str  # their Contact URI
    route: tuple[str, ...]  # the Record-Route values, in order (we are the callee, RFC 3261 §12.1.1)
    dest: Address  # the next hop: the first route's address, else where the request came from
    cseq: int = 0


@dataclass(slots=True)
class Session:
    dialog: Dialog
    kind: str
    box: str
    caller: str
    endpoint: RtpEndpoint
    port: int
    app: Any
    answer: sdp.SessionDescription
    invite_cseq: int
    started: float
    wall_started: float
    recording: WavWriter | None = None
    recording_path: Path | None = None
    recording_kind: str = ""
    recording_wall: float = 0.0
    ended: bool = False
    acked: bool = False


@dataclass(slots=True)
class Subscription:
    dialog: Dialog
    box: str
    expires_at: float
    version: int = 0


@dataclass(slots=True)
class Counters:
    calls: int = 0
    deposits: int = 0
    refused: int = 0
    timeouts: int = 0
    notifies: int = 0
    frames: int = 0
    late_frames: int = 0
    max_lateness: float = 0.0


class MediaService:
    """One process's media service; ``start()`` binds the SIP socket, ``close()`` hangs up all."""

    def __init__(
        self,
        settings: MediaSettings,
        prompts: PromptSet,
        store: MailboxStore,
        mailer: Mailer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.prompts = prompts
        self.store = store
        self.mailer = mailer
        self.wall = clock
        self.pool = PortPool(*settings.rtp_ports)
        self.sip: SipSocket | None = None
        self.sessions: dict[str, Session] = {}
        self.subscriptions: dict[str, Subscription] = {}  # by Call-ID
        self.rooms = Rooms(self._room)
        self.counters = Counters()
        self._beep = beep()
        self._tasks: list[asyncio.Task[None]] = []
        self._opening = Background()  # RTP sockets being attached
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mwi_sent: dict[str, bool] = {}

    # ---- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        s = self.settings
        _, proto = await loop.create_datagram_endpoint(
            lambda: SipSocket(self._on_request, s.sip_host, s.sip_port), local_addr=(s.sip_host, s.sip_port)
        )
        self.sip = proto
        if s.sip_port == 0:
            sockname = proto.transport.get_extra_info("sockname") if proto.transport else None
            if sockname:
                self.sip.port = sockname[1]
        self._tasks = [loop.create_task(self._clock()), loop.create_task(self._housekeeping())]
        log.info(
            "media_started", sip=f"{s.sip_host}:{self.sip.port}", rtp=f"{s.rtp_ports[0]}-{s.rtp_ports[1]}"
        )

    def update(self, settings: MediaSettings) -> None:
        """A reload: new owners, PINs and limits for new calls; calls in progress go on."""
        self.settings = settings
        self.store.max_messages = settings.max_messages
        self.store.max_message_seconds = settings.max_message_seconds

    @property
    def port(self) -> int:
        return self.sip.port if self.sip is not None else self.settings.sip_port

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            self._end(session, "shutdown", send_bye=True)
        await asyncio.sleep(0.05)  # let the BYEs leave
        for task in self._tasks:
            await cancel_and_wait(task)
        await self._opening.cancel()
        if self.mailer is not None:
            await self.mailer.drain()
        if self.sip is not None:
            self.sip.close()

    # ---- SIP requests ---------------------------------------------------------------------------------
    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_request(self, req: Request, source: Address) -> None:
        method = req.method
        if source[0] not in self.settings.trusted:
            if method != "ACK":
                self._reply(req, source, 403, "Only the proxy may call the media service")
            return
        if method == "INVITE":
            if req.to_tag is None:
                self._on_invite(req, source)
            else:
                self._on_reinvite(req, source)
        elif method == "ACK":
            session = self.sessions.get(req.call_id)
            if session is not None:
                session.acked = True
        elif method == "BYE":
            session = self.sessions.get(req.call_id)
            if session is None:
                self._reply(req, source, 481)
                return
            self._reply(req, source, 200)
            self._end(session, "caller", send_bye=False)
        elif method == "CANCEL":
            self._reply(req, source, 200 if req.call_id in self.sessions else 481)
        elif method == "INFO":
            self._on_info(req, source)
        elif method == "SUBSCRIBE":
            self._on_subscribe(req, source)
        elif method == "OPTIONS":
            self._reply(req, source, 200, extra=(("Allow", ALLOW), ("Accept", "application/sdp")))
        else:
            self._reply(req, source, 405, extra=(("Allow", ALLOW),))

    def _reply(
        self,
        req: Request,
        source: Address,
        status: int,
        reason: str | None = None,
        *,
        tag: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> None:
        assert self.sip is not None
        if 200 <= status < 300 and req.method in ("INVITE", "SUBSCRIBE"):
            # a 2xx that sets up (or refreshes) a dialog carries the Record-Route set back (RFC 3261
            # §12.1.1): the phone's ACK, BYE and refreshes then go through the proxy, not around it
            extra = (*(("Record-Route", v) for v in req.headers.get_all("record-route")), *extra)
        resp = req.make_response(
            status, reason, to_tag=tag or (new_tag() if status > 100 else None), extra=extra
        )
        resp.body = body
        self.sip.respond(req, resp, source)

    def _dialog(self, req: Request, source: Address, tag: str) -> Dialog:
        route = tuple(req.headers.get_all("record-route"))
        dest = source
        if route:
            hop = NameAddr.parse(route[0]).sip_uri
            if hop is not None:
                dest = (hop.host.strip("[]"), hop.port or 5060)
        contacts = req.headers.get_all("contact")
        target = target_uri_of(contacts[0]) if contacts else req.from_.uri_text
        to_value = req.headers.get("to") or ""
        return Dialog(
            req.call_id, f"{to_value};tag={tag}", req.headers.get("from") or "", target, route, dest
        )

    def _contact(self) -> str:
        host = self.settings.sip_host
        host = f"[{host}]" if ":" in host else host
        return f"<sip:media@{host}:{self.port}>"

    def _on_invite(self, req: Request, source: Address) -> None:
        user = req.ruri.user if isinstance(req.ruri, SipUri) else None
        service, _, key = (user or "").partition("-")
        if service not in ("voicemail", "mailbox", "conference") or not key:
            self._reply(req, source, 404, "No such media service")
            return
        owner = self.settings.owners.get(key)
        if service in ("voicemail", "mailbox") and (owner is None or not owner.voicemail):
            self._reply(req, source, 404, "No such mailbox")
            return
        try:
            offer = sdp.parse(req.body)
            answer = None
            sock, port = self.pool.bind(self.settings.rtp_address)
        except sdp.SdpError as exc:
            self._reply(req, source, exc.status, exc.reason)
            return
        except OSError:
            self._reply(req, source, 503, "No media port free", extra=(("Retry-After", "5"),))
            return
        try:
            answer = sdp.answer_offer(offer, address=self.settings.rtp_address, port=port,
                                      session_id=secrets.randbits(31))  # fmt: skip
        except sdp.SdpError as exc:
            sock.close()
            self.pool.release(port)
            self._reply(req, source, exc.status, exc.reason)
            return
        now = self._now()
        tag = new_tag()
        dialog = self._dialog(req, source, tag)
        caller = _caller_of(req)
        endpoint = RtpEndpoint(
            answer.audio, now, self.settings.rtp_timeout, lambda d: self._digit(req.call_id, d)
        )
        endpoint.clock = self._now
        try:
            app = self._application(service, key, owner, caller, req.call_id, now)
        except Exception:  # a mailbox that cannot be read: the caller gets an answer, the service goes on
            log.exception("media_application_failed", service=service, key=key)
            sock.close()
            self.pool.release(port)
            self._reply(req, source, 500, "Media application failed")
            return
        session = Session(
            dialog, service, key, caller, endpoint, port, app, answer.sdp, req.cseq[0], now, self.wall()
        )
        self.sessions[req.call_id] = session
        assert self._loop is not None
        self._opening.spawn(self._open_rtp(session, sock))
        self.counters.calls += 1
        self._reply(req, source, 200, tag=tag, body=answer.sdp.to_bytes(),
                    extra=(("Contact", self._contact()), ("Allow", ALLOW), ("Content-Type", "application/sdp")))  # fmt: skip
        log.info("media_call", service=service, key=key, caller=caller, call_id=req.call_id)

    async def _open_rtp(self, session: Session, sock: Any) -> None:
        assert self._loop is not None
        try:
            await self._loop.create_datagram_endpoint(lambda: session.endpoint, sock=sock)
        except OSError:
            self._end(session, "rtp", send_bye=True)

    def _on_reinvite(self, req: Request, source: Address) -> None:
        session = self.sessions.get(req.call_id)
        if session is None:
            self._reply(req, source, 481)
            return
        tag = req.to_tag
        if req.body:
            try:
                offer = sdp.parse(req.body)
                version = session.answer.origin.session_version + 1
                answer = sdp.answer_offer(offer, address=self.settings.rtp_address, port=session.port,
                                          session_id=session.answer.origin.session_id, session_version=version)  # fmt: skip
            except sdp.SdpError as exc:
                self._reply(req, source, exc.status, exc.reason, tag=tag)
                return
            session.endpoint.update(answer.audio)
            session.answer = answer.sdp
        self._reply(req, source, 200, tag=tag, body=session.answer.to_bytes(),
                    extra=(("Contact", self._contact()), ("Content-Type", "application/sdp")))  # fmt: skip

    def _on_info(self, req: Request, source: Address) -> None:
        session = self.sessions.get(req.call_id)
        if session is None:
            self._reply(req, source, 481)
            return
        ctype = (req.content_type or "").lower()
        if ctype != "application/dtmf-relay":
            self._reply(req, source, 415, extra=(("Accept", "application/dtmf-relay"),), tag=req.to_tag)
            return
        try:
            relay = parse_dtmf_relay(req.body)
        except DtmfError as exc:
            self._reply(req, source, 400, str(exc)[:80], tag=req.to_tag)
            return
        self._reply(req, source, 200, tag=req.to_tag)
        self._digit(req.call_id, relay.digit)

    # ---- applications -----------------------------------------------------------------------------
    def _application(
        self, service: str, key: str, owner: MailboxOwner | None, caller: str, call_id: str, now: float
    ) -> Any:
        s = self.settings
        if service == "voicemail":
            assert owner is not None
            return Deposit.with_prompts(
                self.prompts, greeting=_greeting_pcm(self.store.greeting_path(key)), mailbox=owner.extension,
                full=not self.store.can_deposit(key), beep=self._beep, max_seconds=s.max_message_seconds,
                silence_seconds=s.silence_seconds, min_seconds=s.min_message_seconds,
            )  # fmt: skip
        if service == "mailbox":
            assert owner is not None
            store = self.store
            return Retrieval(
                store.messages(key), self.prompts, lambda msg_id: _message_pcm(store, key, msg_id),
                lambda: _greeting_pcm(store.greeting_path(key)), now=self.wall(), pin=owner.pin,
                tz=s.timezone, beep=self._beep, max_greeting_seconds=s.max_greeting_seconds,
            )  # fmt: skip
        pins = s.conference_pins.get(key)
        if pins:
            return RoomEntry(
                call_id, self.rooms, self.prompts, pins={pin: f"{key}/{name}" for pin, name in pins.items()}
            )
        return RoomEntry(call_id, self.rooms, self.prompts, room=key)

    def _room(self, name: str) -> Room:
        return Room(name, max_participants=self.settings.max_participants)

    def _digit(self, call_id: str, digit: str) -> None:
        session = self.sessions.get(call_id)
        if session is not None and not session.ended:
            session.app.on_digit(digit, self._now())

    # ---- the 20 ms clock --------------------------------------------------------------------------
    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += FRAME
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            lateness = now - due
            if lateness > 0.2:  # the process was stopped or starved: skip ahead, do not burst
                due = now
            try:
                self._tick(now, lateness)
            except Exception:  # one bad application must not stop every call's audio
                log.exception("media_tick_failed")

    def _tick(self, now: float, lateness: float) -> None:
        counters = self.counters
        late = lateness > LATE_AFTER
        sessions = [s for s in self.sessions.values() if not s.ended]
        for session in sessions:
            frame_in = session.endpoint.next_frame()
            tick = session.app.tick(frame_in, now)
            if session.acked or session.endpoint.stream.latched:
                session.endpoint.send(tick.out)
                counters.frames += 1
                if late:
                    counters.late_frames += 1
            if tick.record is not None and session.recording is not None:
                session.recording.write(tick.record)
            if tick.events:
                self._events(session, tick.events)
        self.rooms.tick()  # phase two: every room mixes what its seats handed in (they hear it next tick)
        if lateness > counters.max_lateness:
            counters.max_lateness = lateness

    def _events(self, session: Session, events: tuple[Any, ...]) -> None:
        for event in events:
            kind = type(event)
            if kind is RecordingStarted:
                self._start_recording(session, event.kind)
            elif kind is RecordingEnded:
                self._finish_recording(session, event)
            elif kind is MarkHeard:
                with contextlib.suppress(UnknownMessage):
                    self.store.mark_heard(session.box, event.msg_id, self.wall())
                self._mailbox_changed(session.box)
            elif kind is DeleteMessage:
                with contextlib.suppress(UnknownMessage):
                    self.store.delete(session.box, event.msg_id)
                self._mailbox_changed(session.box)
            elif kind is DeleteGreeting:
                self.store.remove_greeting(session.box)
            elif kind is Hangup:
                self._end(session, event.reason, send_bye=True)

    def _start_recording(self, session: Session, kind: str) -> None:
        wall = self.wall()
        if kind == "message":
            path = self.store.recording_path(session.box, session.caller, wall)
        else:  # not in the box's incoming/: an interrupted greeting must never be adopted as a message
            pending = self.store.root / ".greetings"
            pending.mkdir(parents=True, exist_ok=True)
            path = pending / f"{session.box}-{int(wall * 1000)}.wav"
        session.recording = WavWriter(path)
        session.recording_path = path
        session.recording_kind = kind
        session.recording_wall = wall

    def _finish_recording(self, session: Session, event: RecordingEnded) -> None:
        writer, path = session.recording, session.recording_path
        session.recording = session.recording_path = None
        if writer is None or path is None:
            return
        writer.close()
        if not event.keep:
            path.unlink(missing_ok=True)
            return
        if event.kind == "greeting":
            self.store.set_greeting(session.box, path)
            log.info("greeting_recorded", box=session.box, seconds=event.seconds)
            return
        try:
            msg = self.store.deposit(session.box, path, session.caller, session.recording_wall, event.seconds)
        except DepositRefused as exc:
            self.counters.refused += 1
            log.info("voicemail_refused", box=session.box, reason=str(exc))
            return
        self.counters.deposits += 1
        log.info("voicemail_deposited", box=session.box, caller=session.caller, seconds=event.seconds,
                 message=msg.id, reason=event.reason)  # fmt: skip
        self._mailbox_changed(session.box)
        owner = self.settings.owners.get(session.box)
        if self.mailer is not None and owner is not None and owner.email:
            self.mailer.notify(
                owner.email, owner.extension, session.caller, msg.start, msg.duration, msg.path
            )

    # ---- the end of a call ------------------------------------------------------------------------
    def _end(self, session: Session, reason: str, *, send_bye: bool) -> None:
        if session.ended:
            return
        session.ended = True
        now = self._now()
        with contextlib.suppress(Exception):
            events = session.app.on_hangup(now)
            self._events(session, tuple(e for e in events if type(e) is not Hangup))
        if session.recording is not None:  # the application did not close it: keep nothing half-made
            session.recording.close()
            if session.recording_path is not None:
                session.recording_path.unlink(missing_ok=True)
            session.recording = None
        session.endpoint.close()
        self.pool.release(session.port)
        self.sessions.pop(session.dialog.call_id, None)
        if send_bye:
            self._send_in_dialog(session.dialog, "BYE", extra=(("Reason", f'SIP;cause=200;text="{reason}"'),))
        log.info("media_call_ended", service=session.kind, key=session.box, reason=reason,
                 seconds=round(now - session.started, 2))  # fmt: skip

    def _send_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        extra: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        on_final: Callable[[Any], None] | None = None,
    ) -> None:
        assert self.sip is not None
        dialog.cseq += 1
        _, via = self.sip.via()
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        for value in dialog.route:
            headers.add("Route", value)
        headers.add("From", dialog.local)
        headers.add("To", dialog.remote)
        headers.add("Call-ID", dialog.call_id)
        headers.add("CSeq", f"{dialog.cseq} {method}")
        headers.add("Contact", self._contact())
        for name, value in extra:
            headers.add(name, value)
        self.sip.request(Request(method, dialog.target, headers, body), dialog.dest, on_final)

    # ---- housekeeping: RTP inactivity, subscriptions, MWI refresh ------------------------------------
    async def _housekeeping(self) -> None:
        refresh_at = 0.0
        while True:
            await asyncio.sleep(1.0)
            now = self._now()
            try:
                for session in list(self.sessions.values()):
                    if session.endpoint.stream.on_timer(now) is not None:
                        self.counters.timeouts += 1
                        self._end(session, "RTP timeout", send_bye=True)
                    elif not session.acked and now - session.started > 32.0:
                        self._end(session, "no ACK", send_bye=True)
                for call_id, sub in list(self.subscriptions.items()):
                    if sub.expires_at <= now:
                        del self.subscriptions[call_id]
                if now >= refresh_at:
                    refresh_at = now + self.settings.mwi_refresh
                    self._refresh_mwi()
            except Exception:
                log.exception("media_housekeeping_failed")

    # ---- message waiting ------------------------------------------------------------------------
    def _on_subscribe(self, req: Request, source: Address) -> None:
        event = (req.headers.get("event") or "").split(";", 1)[0].strip().lower()
        if event != MWI_EVENT:
            self._reply(req, source, 489, extra=(("Allow-Events", MWI_EVENT),))
            return
        expires = req.expires
        expires = MAX_SUBSCRIPTION if expires is None else min(expires, MAX_SUBSCRIPTION)
        now = self._now()
        sub = self.subscriptions.get(req.call_id)
        if req.to_tag is None:
            user = req.ruri.user if isinstance(req.ruri, SipUri) else None
            service, _, key = (user or "").partition("-")
            owner = self.settings.owners.get(key)
            if service != "mailbox" or owner is None or not owner.voicemail:
                self._reply(req, source, 404, "No such mailbox")
                return
            tag = new_tag()
            sub = Subscription(self._dialog(req, source, tag), key, now + expires)
            if expires:
                self.subscriptions[req.call_id] = sub
        elif sub is None or sub.dialog.local.rsplit(";tag=", 1)[-1] != req.to_tag:
            self._reply(req, source, 481)
            return
        else:
            tag = req.to_tag
            sub.expires_at = now + expires
            if not expires:
                self.subscriptions.pop(req.call_id, None)
        self._reply(
            req, source, 200, tag=tag, extra=(("Expires", str(expires)), ("Contact", self._contact()))
        )
        state = f"active;expires={expires}" if expires else "terminated;reason=timeout"
        self._notify(sub, state)

    def _summary(self, box: str) -> MessageSummary:
        counts = self.store.counts(box)
        owner = self.settings.owners.get(box)
        return MessageSummary(counts.new, counts.saved, owner.aor if owner else None)

    def _notify(self, sub: Subscription, state: str) -> None:
        self.counters.notifies += 1
        body = self._summary(sub.box).to_bytes()
        self._send_in_dialog(sub.dialog, "NOTIFY", body=body,
                             extra=(("Event", MWI_EVENT), ("Subscription-State", state),
                                    ("Content-Type", MWI_TYPE)))  # fmt: skip

    def _mailbox_changed(self, box: str) -> None:
        now = self._now()
        subs = [s for s in self.subscriptions.values() if s.box == box and s.expires_at > now]
        for sub in subs:
            self._notify(sub, f"active;expires={max(1, int(sub.expires_at - now))}")
        if not subs:
            self._unsolicited(box)

    def _unsolicited(self, box: str) -> None:
        """RFC 3842 NOTIFY outside a subscription, through the proxy to every registered contact."""
        assert self.sip is not None
        self.counters.notifies += 1
        summary = self._summary(box)
        self._mwi_sent[box] = summary.waiting is True
        uri = f"sip:mailbox-{box}@{join_hostport(*self.settings.proxy)}"
        _, via = self.sip.via()
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{self._contact()};tag={new_tag()}")
        headers.add("To", f"<{uri}>")
        headers.add("Call-ID", f"{secrets.token_hex(12)}@media")
        headers.add("CSeq", "1 NOTIFY")
        headers.add("Contact", self._contact())
        headers.add("Event", MWI_EVENT)
        headers.add("Subscription-State", "active")
        headers.add("Content-Type", MWI_TYPE)
        self.sip.request(Request("NOTIFY", uri, headers, summary.to_bytes()), self.settings.proxy)

    def _refresh_mwi(self) -> None:
        """Resend the lamp's state to phones that do not subscribe (they may have registered since)."""
        now = self._now()
        subscribed = {s.box for s in self.subscriptions.values() if s.expires_at > now}
        for box, owner in self.settings.owners.items():
            if not owner.voicemail or box in subscribed:
                continue
            if self.store.counts(box).new or self._mwi_sent.get(box):
                self._unsolicited(box)


def _caller_of(req: Request) -> str:
    """The caller's number as the proxy asserted it (P-Asserted-Identity), else the From user."""
    for value in (req.headers.get("p-asserted-identity"), req.headers.get("from")):
        if not value:
            continue
        try:
            addr = NameAddr.parse(value.split(",")[0])
        except SipParseError:
            continue
        if addr.uri_text.lower().startswith("tel:"):
            return addr.uri_text[4:].split(";", 1)[0]
        uri = addr.sip_uri
        if uri is not None and uri.user and uri.user.lower() != "anonymous":
            return uri.user
    return ""


def _greeting_pcm(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return read_wav(path)[0]
    except (OSError, ValueError):
        return None  # unreadable: the default greeting plays


def _message_pcm(store: MailboxStore, box: str, msg_id: str) -> bytes:
    """A message's audio; b"" when it is gone (deleted meanwhile, unreadable): the menu moves on."""
    try:
        return read_wav(store.message(box, msg_id).path)[0]
    except (OSError, ValueError, UnknownMessage):
        return b""
