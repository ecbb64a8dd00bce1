"""Message waiting (RFC 3842): the ``application/simple-message-summary`` body and its reading.

The service sends one whenever a mailbox's counts change: in the dialog of each phone that
SUBSCRIBEd to ``message-summary``, and unsolicited (through the proxy, to every registered contact)
for the phones that never subscribe. The lamp is on while there is a new (unheard) message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONTENT_TYPE = "application/simple-message-summary"
EVENT = "message-summary"

_COUNTS = re.compile(r"^\s*(\d+)\s*/\s*(\d+)(?:\s*\(\s*(\d+)\s*/\s*(\d+)\s*\))?\s*$")


class SummaryError(ValueError):
    """A body that is not a simple-message-summary."""


@dataclass(frozen=True, slots=True)
class MessageSummary:
    new: int
    old: int
    account: str | None = None  # Message-Account: the mailbox's URI
    waiting: bool | None = None  # None: new > 0 (a received status line may stand without counts)

    def __post_init__(self) -> None:
        if self.waiting is None:
            object.__setattr__(self, "waiting", self.new > 0)

    def to_bytes(self) -> bytes:
        """RFC 3842 §5.2: status line, the account, the voice-message counts (no urgent ones)."""
        lines = [f"Messages-Waiting: {'yes' if self.waiting else 'no'}"]
        if self.account:
            lines.append(f"Message-Account: {self.account}")
        lines.append(f"Voice-Message: {self.new}/{self.old} (0/0)")
        return ("\r\n".join(lines) + "\r\n").encode("ascii")


def parse_summary(body: bytes | str) -> MessageSummary:
    """Read a summary (what a phone does with our NOTIFY; the tests use it the same way)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    waiting: bool | None = None
    account = None
    new = old = 0
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = name.strip().lower(), value.strip()
        if key == "messages-waiting":
            if value.lower() not in ("yes", "no"):
                raise SummaryError(f"Messages-Waiting must be yes or no, not {value!r}")
            waiting = value.lower() == "yes"
        elif key == "message-account":
            account = value
        elif key == "voice-message":
            m = _COUNTS.match(value)
            if m is None:
                raise SummaryError(f"bad Voice-Message counts {value!r}")
            new, old = int(m.group(1)), int(m.group(2))
    if waiting is None:
        raise SummaryError("no Messages-Waiting line")
    return MessageSummary(new, old, account, waiting)
