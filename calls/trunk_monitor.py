"""Carrier trunks kept in rotation and registered, and the platform's other hosts watched, sans I/O:
OPTIONS health probes and outbound registration (REGISTER with digest), as a core that takes events
with ``now`` and returns actions.

Probes. A trunk with a ``probe_interval`` gets an ``OPTIONS sip:<host>:<port>`` every interval. Any
answer below 500 (200, but also 404/405/401/407: something is there and speaks SIP) is a success; a
5xx or 6xx, a transport error, or no answer by the time the next probe is due is a failure. After
``probe_failures`` failures in a row the trunk is *down* (``TrunkState(up=False)``); the first success
brings it back up. The call controller hears the changes (``CallController.on_trunk_state``) and skips
down trunks while another of a call's set is up.

Peers. The other hosts of a platform (``server.cluster``, docs/scale-out.md) are probed the same way,
as links with ``peer=True``: any answer at all is a success (a host that answers is there to relay,
as Kamailio's dispatcher with ``ds_ping_reply_codes`` taking every class), and their changes go to
``CallController.on_peer_state``, which rings no contact through a host that is down. A call's INVITE
through a peer that stayed silent takes it down at once (``mark_down``), without waiting for the
probes; the next answered probe brings it back.

Registration. A trunk with ``register`` is sent ``REGISTER sip:<domain>`` (AOR
``sip:<username>@<domain>``, Contact at our address); a 401/407 is answered once with the credentials
(digest, ``sipcore.digest``); a 2xx is refreshed at 80 % of the granted time (at most 60 s before it
runs out); a failure (another status, a second challenge, a time-out, a transport error) is retried
after 1, 2, 4 ... seconds, up to ``retry_max``. Every change is a ``RegistrationState``.

The adapter (``server/proxy_service.py``) sends the requests through client transactions keyed by
``Probe`` / ``Registering``, feeds back their answers, logs and counts the state changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from calls.actions import SendRequest
from calls.model import Destination
from sipcore.digest import build_authorization
from sipcore.message import Headers, Request, Response, new_branch
from sipcore.proxy import Hop


@dataclass(frozen=True, slots=True)
class Registration:
    username: str
    password: str
    expires: int = 600
    domain: str = ""  # the Request-URI and AOR domain
    retry_max: float = 300.0


@dataclass(frozen=True, slots=True)
class TrunkLink:
    """What the monitor needs of one trunk (a reload that changes it restarts its probes / registration)."""

    name: str
    dest: Destination
    probe_interval: float | None = None
    probe_failures: int = 3
    register: Registration | None = None
    peer: bool = False  # another host of the platform (server.cluster), not a carrier


@dataclass(slots=True, eq=False)
class Probe:
    """The key of one OPTIONS probe's client transaction."""

    trunk: str


@dataclass(slots=True, eq=False)
class Registering:
    """The key of one REGISTER's client transaction."""

    trunk: str
    authorised: bool = False  # carries credentials already: another challenge is a failure


@dataclass(frozen=True, slots=True)
class TrunkState:
    """A trunk (``peer``: a host of the platform) went down (``probe_failures`` failed probes in a row,
    or ``mark_down``) or came back up (a probe answered)."""

    trunk: str
    up: bool
    status: int  # the last probe's answer (408: none in time, 503: could not be sent)
    peer: bool = False


@dataclass(frozen=True, slots=True)
class RegistrationState:
    """A registration succeeded (``expires``: seconds granted, refreshed at ``next_in``) or failed
    (``status``; retried in ``next_in`` seconds)."""

    trunk: str
    registered: bool
    status: int
    expires: int | None
    next_in: float


MonitorAction = SendRequest | TrunkState | RegistrationState


@dataclass(slots=True)
class _ProbeState:
    interval: float
    threshold: int
    due: float
    up: bool = True
    failures: int = 0
    waiting: Probe | None = None
    cseq: int = 0


@dataclass(slots=True)
class _RegState:
    reg: Registration
    due: float
    call_id: str
    tag: str
    cseq: int = 0
    waiting: Registering | None = None
    failures: int = 0
    registered: bool = False
    contact: str = ""  # our Contact URI, to find our binding among those a 2xx lists


@dataclass(slots=True)
class _Trunk:
    link: TrunkLink
    probe: _ProbeState | None = None
    reg: _RegState | None = None
    call_id: str = ""  # the probes'
    tag: str = ""


@dataclass(slots=True)
class TrunkMonitor:
    """``hop(dest)``: our Via / Contact address towards a destination; ``new_id()``: a fresh Call-ID
    or tag (the adapter makes Call-IDs whose answers come back to this process)."""

    hop: Callable[[Destination], Hop]
    new_id: Callable[[], str]
    register: bool = True  # this process registers (one process of several does)
    trunks: dict[str, _Trunk] = field(default_factory=dict)

    # ---- configuration ----------------------------------------------------------------------------
    def update(self, links: Iterable[TrunkLink], now: float) -> list[MonitorAction]:
        """Start (or, after a reload, keep, restart or drop) each trunk's probes and registration;
        a trunk whose settings did not change keeps its state."""
        fresh: dict[str, _Trunk] = {}
        for link in links:
            old = self.trunks.get(link.name)
            if old is not None and old.link == link:
                fresh[link.name] = old
                continue
            entry = _Trunk(link, call_id=self.new_id(), tag=self.new_id()[:10])
            if link.probe_interval is not None:
                entry.probe = _ProbeState(float(link.probe_interval), link.probe_failures, now)
            if link.register is not None and self.register:
                entry.reg = _RegState(link.register, now, self.new_id(), self.new_id()[:10])
            fresh[link.name] = entry
        out: list[MonitorAction] = []
        for name, old in self.trunks.items():
            forgotten = fresh.get(name) is not old
            if forgotten and old.probe is not None and not old.probe.up:
                out.append(TrunkState(name, True, 0, old.link.peer))  # starts afresh (or is gone): not down
        self.trunks = fresh
        out.extend(self.on_timer(now))
        return out

    def is_up(self, trunk: str) -> bool:
        entry = self.trunks.get(trunk)
        return entry is None or entry.probe is None or entry.probe.up

    def next_deadline(self) -> float | None:
        times = [e.probe.due for e in self.trunks.values() if e.probe is not None]
        times += [e.reg.due for e in self.trunks.values() if e.reg is not None]
        return min(times) if times else None

    # ---- events -----------------------------------------------------------------------------------
    def on_timer(self, now: float) -> list[MonitorAction]:
        out: list[MonitorAction] = []
        for entry in self.trunks.values():
            probe = entry.probe
            if probe is not None and probe.due <= now:
                if probe.waiting is not None:  # the last one never answered in time
                    probe.waiting = None
                    self._probe_failed(entry, 408, out)
                probe.due = now + probe.interval
                self._send_probe(entry, out)
            reg = entry.reg
            if reg is not None and reg.due <= now:
                reg.waiting = None
                reg.due = now + 32.0  # an answer or a failure moves it first
                self._send_register(entry, None, out)
        return out

    def on_response(self, key: Probe | Registering, resp: Response, now: float) -> list[MonitorAction]:
        out: list[MonitorAction] = []
        entry = self.trunks.get(key.trunk)
        if entry is None or resp.status < 200:
            return out
        if type(key) is Probe:
            probe = entry.probe
            if probe is not None and probe.waiting is key:
                probe.waiting = None
                if resp.status < 500 or entry.link.peer:
                    self._probe_answered(entry, resp.status, out)
                else:
                    self._probe_failed(entry, resp.status, out)
            return out
        reg = entry.reg
        if reg is None or reg.waiting is not key:
            return out
        reg.waiting = None
        status = resp.status
        if 200 <= status < 300:
            granted = _granted(resp, reg.reg.expires, reg.contact)
            refresh = max(1.0, granted - min(60.0, granted * 0.2))
            reg.due, reg.failures, reg.registered = now + refresh, 0, True
            out.append(RegistrationState(key.trunk, True, status, granted, refresh))
            return out
        if status in (401, 407) and not key.authorised:  # type: ignore[union-attr]
            challenge = resp.headers.get("www-authenticate" if status == 401 else "proxy-authenticate")
            if challenge is not None:
                self._send_register(entry, (status, challenge), out)
                return out
        self._register_failed(entry, status, now, out)
        return out

    def on_failure(self, key: Probe | Registering, status: int, now: float) -> list[MonitorAction]:
        """The probe or REGISTER timed out (408) or could not be sent (503)."""
        out: list[MonitorAction] = []
        entry = self.trunks.get(key.trunk)
        if entry is None:
            return out
        if type(key) is Probe:
            if entry.probe is not None and entry.probe.waiting is key:
                entry.probe.waiting = None
                self._probe_failed(entry, status, out)
        elif entry.reg is not None and entry.reg.waiting is key:
            entry.reg.waiting = None
            self._register_failed(entry, status, now, out)
        return out

    def mark_down(self, name: str, status: int) -> list[MonitorAction]:
        """Traffic found a probed link dead (a call's INVITE through a peer went unanswered): down at
        once, without waiting for ``probe_failures`` probes; the next answered probe brings it back.
        Nothing for a link that is not probed (nothing would bring it back) or is down already."""
        out: list[MonitorAction] = []
        entry = self.trunks.get(name)
        probe = entry.probe if entry is not None else None
        if entry is not None and probe is not None and probe.up:
            probe.failures = max(probe.failures, probe.threshold)
            probe.up = False
            out.append(TrunkState(name, False, status, entry.link.peer))
        return out

    # ---- probes -----------------------------------------------------------------------------------
    def _send_probe(self, entry: _Trunk, out: list[MonitorAction]) -> None:
        probe = entry.probe
        assert probe is not None
        dest = entry.link.dest
        target = f"sip:{_host(dest.host)}:{dest.port}"
        hop = self.hop(dest)
        probe.cseq += 1
        key = Probe(entry.link.name)
        probe.waiting = key
        headers = Headers(
            [
                ["via", "Via", hop.via(new_branch())],
                ["max-forwards", "Max-Forwards", "70"],
                ["from", "From", f"<sip:sipcore@{hop.host}>;tag={entry.tag}"],
                ["to", "To", f"<{target}>"],
                ["call-id", "Call-ID", entry.call_id],
                ["cseq", "CSeq", f"{probe.cseq} OPTIONS"],
                ["accept", "Accept", "application/sdp"],
                ["content-length", "Content-Length", "0"],
            ]
        )
        out.append(SendRequest(Request("OPTIONS", target, headers), dest, key))  # type: ignore[arg-type]

    def _probe_answered(self, entry: _Trunk, status: int, out: list[MonitorAction]) -> None:
        probe = entry.probe
        assert probe is not None
        probe.failures = 0
        if not probe.up:
            probe.up = True
            out.append(TrunkState(entry.link.name, True, status, entry.link.peer))

    def _probe_failed(self, entry: _Trunk, status: int, out: list[MonitorAction]) -> None:
        probe = entry.probe
        assert probe is not None
        probe.failures += 1
        if probe.up and probe.failures >= probe.threshold:
            probe.up = False
            out.append(TrunkState(entry.link.name, False, status, entry.link.peer))

    # ---- registration -----------------------------------------------------------------------------
    def _send_register(
        self, entry: _Trunk, challenge: tuple[int, str] | None, out: list[MonitorAction]
    ) -> None:
        reg = entry.reg
        assert reg is not None
        settings, dest = reg.reg, entry.link.dest
        domain = settings.domain or _host(dest.host)
        uri = f"sip:{domain}"
        aor = f"<sip:{settings.username}@{domain}>"
        hop = self.hop(dest)
        reg.contact = f"sip:{settings.username}@{hop.host}:{hop.port}{hop.uri_params}"
        reg.cseq += 1
        key = Registering(entry.link.name, authorised=challenge is not None)
        reg.waiting = key
        headers = Headers(
            [
                ["via", "Via", hop.via(new_branch())],
                ["max-forwards", "Max-Forwards", "70"],
                ["from", "From", f"{aor};tag={reg.tag}"],
                ["to", "To", aor],
                ["call-id", "Call-ID", reg.call_id],
                ["cseq", "CSeq", f"{reg.cseq} REGISTER"],
                ["contact", "Contact", f"<{reg.contact}>"],
                ["expires", "Expires", str(settings.expires)],
            ]
        )
        if challenge is not None:
            status, text = challenge
            value = build_authorization(text, username=settings.username, password=settings.password,
                                        method="REGISTER", uri=uri, cnonce=self.new_id()[:16])  # fmt: skip
            headers.add("Authorization" if status == 401 else "Proxy-Authorization", value)
        headers.add("Content-Length", "0")
        out.append(SendRequest(Request("REGISTER", uri, headers), dest, key))  # type: ignore[arg-type]

    def _register_failed(self, entry: _Trunk, status: int, now: float, out: list[MonitorAction]) -> None:
        reg = entry.reg
        assert reg is not None
        reg.failures += 1
        reg.registered = False
        delay = min(reg.reg.retry_max, float(2 ** min(reg.failures - 1, 16)))
        reg.due = now + delay
        out.append(RegistrationState(entry.link.name, False, status, None, delay))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _granted(resp: Response, asked: int, ours: str) -> int:
    """The expiry the registrar granted: our Contact's ``expires`` parameter (the 2xx lists every
    binding of the AOR, RFC 3261 §10.2.4), else Expires, else what we asked."""
    for value in resp.headers.get_all("contact"):
        if f"<{ours}>" not in value and len(resp.headers.get_all("contact")) > 1:
            continue
        for param in value.split(">", 1)[-1].split(";")[1:]:
            name, _, number = param.partition("=")
            if name.strip().lower() == "expires" and number.strip().isdigit():
                return int(number.strip())
    expires = (resp.headers.get("expires") or "").strip()
    return int(expires) if expires.isdigit() else asked
