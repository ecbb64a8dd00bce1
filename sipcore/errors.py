"""Errors that carry the answer: the edge turns any of them into the right SIP response in one place."""

from __future__ import annotations


class SipError(Exception):
    """A protocol error with the status code and reason phrase the server should answer with.

    ``status`` is None when no response is possible (e.g. a malformed *response*, which is dropped).
    ``headers`` are extra header (name, value) pairs for the answer (Unsupported, Allow, Warning…).
    """

    def __init__(
        self, reason: str, status: int | None = 400, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.headers = headers


class SipParseError(SipError):
    """The bytes are not a well-formed SIP message (400 unless stated otherwise)."""
