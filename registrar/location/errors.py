"""Refusals of a REGISTER's changes; each carries the SIP answer the registrar sends (h11 style)."""

from __future__ import annotations


class LocationError(Exception):
    """Nothing was changed; answer the REGISTER with ``status`` / ``reason``."""

    status: int = 500
    reason: str = "Server Internal Error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail


class StaleCSeqError(LocationError):
    """Same Call-ID with a CSeq not above the stored one: RFC 3261 §10.3 step 7 mandates 500."""

    status = 500
    reason = "Server Internal Error"


class TooManyContactsError(LocationError):
    """The AOR would exceed its contact limit under the ``reject`` policy (Kamailio answers 503 too)."""

    status = 503
    reason = "Too Many Registered Contacts"


class InvalidChangesError(LocationError):
    """A malformed request, e.g. ``Contact: *`` alongside other contacts or with a non-zero expiry."""

    status = 400
    reason = "Bad Request"


class ContentionError(LocationError):
    """A shared backend kept losing the optimistic race for this AOR; the phone may retry."""

    status = 500
    reason = "Server Internal Error"
