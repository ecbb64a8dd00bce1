"""Limits of stream connections (TCP now; TLS and WebSocket reuse them): how many may be open, and how
long a message may take once begun.

Pure: the transport gives it numbers and ``now`` and acts on the answers. Why these rules: a client
that opens connections and sends half a message (slowloris) or one byte every few seconds (trickle)
would otherwise hold a descriptor for the whole idle timeout, and enough of them exhaust the process's
descriptors, after which no connection, not even to /metrics, can be accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

RATE_GRACE = 2.0
"""Seconds into a message before its byte rate is judged: a message split over several reads within
a round trip is not slow."""


def connection_cap(configured: int | None, workers: int, nofile: int, reserved: int) -> int:
    """This process's share of the server's inbound-connection cap.

    ``configured`` is for the whole server (None: as many as the descriptors allow); each of
    ``workers`` processes takes an equal share (rounded up), and never more than its own descriptor
    limit ``nofile`` (RLIMIT_NOFILE, per process) less ``reserved`` for everything else it opens
    (listeners, the HTTP endpoints' connections, outbound SIP, database, Redis, log files)."""
    room = max(1, nofile - reserved)
    if configured is None:
        return room
    return max(1, min(room, -(-configured // max(1, workers))))


@dataclass(frozen=True, slots=True)
class MessageRules:
    """``message_timeout``: seconds to complete a message once its first byte came (or, on a
    connection accepted from a client, to send anything at all); ``min_byte_rate``: bytes per second
    a message in progress must average once ``RATE_GRACE`` has passed (0: no rate rule)."""

    message_timeout: float = 10.0
    min_byte_rate: int = 100


class MessageClock:
    """When the message in progress on one connection began and how much of it has come.

    Keep-alive CRLFs are not a message: only bytes of a message head or body count (the framer's
    ``pending``). A connection accepted from a client starts as if a message had begun, so one that
    never sends a byte is closed by the same deadline; its first complete message or ping ends that."""

    __slots__ = ("began", "received")

    def __init__(self, now: float, awaiting_first: bool) -> None:
        self.began: float | None = now if awaiting_first else None
        self.received = 0

    @property
    def in_progress(self) -> bool:
        return self.began is not None

    def on_data(self, pending: int, now: float, completed: bool) -> None:
        """After a read: ``pending`` bytes of an unfinished message are buffered (0: none);
        ``completed``: the read finished a message or a ping."""
        if pending:
            if self.began is None or completed:
                self.began = now
            self.received = pending
        elif completed or self.received:
            self.began = None
            self.received = 0

    def verdict(self, rules: MessageRules, now: float) -> str | None:
        """Why the connection must be closed now ("message_timeout", "too_slow"), or None."""
        began = self.began
        if began is None:
            return None
        elapsed = now - began
        if elapsed > rules.message_timeout:
            return "message_timeout"
        slow = self.received < rules.min_byte_rate * elapsed
        if self.received and slow and elapsed >= RATE_GRACE:
            return "too_slow"
        return None


class Throttle:
    """One log line per ``interval`` seconds for an event that may come thousands of times a second
    (refusals under a flood): ``note`` counts and says how many to report when a line is due."""

    __slots__ = ("interval", "last", "pending")

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.pending = 0

    def note(self, now: float) -> int:
        """Count one event; the number to log now (0: not yet)."""
        self.pending += 1
        return self.due(now)

    def due(self, now: float) -> int:
        """The number of events not yet logged if a line is due now (0 otherwise)."""
        if self.pending and now - self.last >= self.interval:
            count, self.pending, self.last = self.pending, 0, now
            return count
        return 0
