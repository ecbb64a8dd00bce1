"""The brute-force guard of one worker made the whole server's: an adapter over the worker channel.

Every worker reads the shared sockets, so one attacker's datagrams and connections land on all of
them, and a REGISTER or INVITE is decided by its owner (`sipcore.ownership`): by To user or
Call-ID, not by source. Each worker keeps its own pure `registrar.guard.Guard`, built with
``share=True``; this adapter sends what it counts to the others and applies what they send:

- **failures** (and the logins that changed something: a source newly known for a username, typos
  taken back), queued by the guard and sent after each decision; the others count them with
  ``record_peer_failure`` / ``record_peer_success``, so every threshold holds for the sum of all
  workers' failures. A peer's failure never bans: the worker that saw the failure decides on its
  view (its own failures plus every peer's received so far) and announces the ban;
- **bans**, sent at once; each worker installs them (``install_ban``) and drops the source where it
  reads it. A ban is logged and counted once, by the source's *authority* worker
  (``crc32(source) % workers``): by the banning worker when it is the authority, else by the
  authority when it receives the ban and did not hold it already. Two workers banning one source in
  the same instant thus still make one log line and one count.

What is not exact: a failure reaches the other workers at the end of the event-loop iteration that
saw it (well under a millisecond on one host), so a burst spread over N workers can pass a threshold
by at most N-1 failures in flight. Several hosts share the same events over Redis (pub/sub and a ban
set, `server.guard_redis`: the guard's interface is the same); one host's workers use the channel.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
import structlog

from registrar.guard import BanReason, Guard, IpBanned

log = structlog.get_logger("sipcore.registrar")

Send = Callable[[bytes, bool], None]  # (payload, at_once): to every other worker
Report = Callable[[IpBanned, str], None]  # log and count one ban (with the method that caused it)


def authority(source: str, workers: int) -> int:
    """The worker that logs and counts the bans of ``source`` (a guard source key)."""
    return zlib.crc32(source.encode()) % workers


class GuardShare:
    """One worker's end: ``publish`` after a decision, ``announce`` a ban, ``receive`` the others'."""

    def __init__(
        self, index: int, workers: int, send: Send, guard: Callable[[], Guard | None], report: Report
    ):
        self.index = index
        self.workers = workers
        self._send = send
        self._guard = guard  # the registrar's current guard (a reload builds a new one)
        self._report = report
        self.received = 0
        self.malformed = 0

    # -- out --
    def publish(self) -> None:
        """Send the failures and logins the guard queued (nothing to do in the common case)."""
        guard = self._guard()
        if guard is not None:
            self.send(guard.take_shared())

    def send(self, events: list[tuple[Any, ...]]) -> None:
        """Events already taken from the guard (the registrar hands the same ones to the other
        hosts, `server.guard_redis`)."""
        if events:
            self._send(msgpack.packb([list(e) for e in events]), False)

    def announce(self, ban: IpBanned, method: str) -> None:
        """A ban this worker decided (a failure, a scanner, a request rate…): to the others at once,
        behind the failures that led to it; logged and counted here if this worker is its authority."""
        self.publish()
        event = ["b", ban.source, ban.until, ban.reason.value, ban.username, method]
        self._send(msgpack.packb([event]), True)
        if authority(ban.source, self.workers) == self.index:
            self._report(ban, method)

    # -- in --
    def receive(self, payload: bytes) -> None:
        """Apply another worker's events; never raises (a bad frame is counted and dropped)."""
        guard = self._guard()
        if guard is None:
            return
        try:
            events = msgpack.unpackb(payload)
            if not isinstance(events, list):
                raise ValueError("not a list")
        except Exception:
            self.malformed += 1
            log.warning("guard_frame_dropped", size=len(payload))
            return
        now = time.time()
        for event in events:
            try:
                self._apply(guard, event, now)
            except Exception:  # one bad event alone is lost
                self.malformed += 1
                log.warning("guard_event_dropped", detail=str(event)[:200])

    def _apply(self, guard: Guard, event: Any, now: float) -> None:
        kind = event[0]
        self.received += 1
        if kind == "f":
            guard.record_peer_failure(str(event[1]), event[2], float(event[3]))
        elif kind == "s":
            guard.record_peer_success(str(event[1]), event[2], float(event[3]))
        elif kind == "b":
            source, until, reason, username, method = event[1:6]
            fresh = guard.install_ban(str(source), float(until), now)
            if fresh and authority(str(source), self.workers) == self.index:
                ban = IpBanned(str(source), float(until), BanReason(reason), username)
                self._report(ban, str(method))
        else:
            raise ValueError(f"unknown guard event {kind!r}")
