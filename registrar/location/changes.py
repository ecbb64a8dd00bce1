"""What one REGISTER asks of the location service, already parsed by the registrar."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from registrar.location.binding import Flow
from registrar.location.errors import InvalidChangesError
from sipcore.records import fast_init


class OverflowPolicy(enum.StrEnum):
    """What to do when a REGISTER would take an AOR over its contact limit."""

    REJECT = "reject"  # refuse the whole REGISTER (503), nothing changes
    DROP_OLDEST = "drop_oldest"  # evict the least recently registered bindings to make room


@fast_init
@dataclass(frozen=True, slots=True)
class ContactChange:
    """One Contact of the REGISTER with its effective expiry (param, else Expires header, else default,
    already clamped by the registrar). ``expires == 0`` removes the binding."""

    contact: str
    expires: int
    q: int = 1000
    instance: str | None = None
    reg_id: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.q <= 1000:
            raise InvalidChangesError(f"q out of range: {self.q}")
        if self.expires < 0:
            raise InvalidChangesError(f"negative expires: {self.expires}")


@fast_init
@dataclass(frozen=True, slots=True)
class RegisterChanges:
    """All changes of one REGISTER, applied atomically. ``wildcard`` is ``Contact: *`` (remove all),
    which RFC 3261 §10.3 step 6 allows only alone and with ``Expires: 0``; the registrar sets it with
    no ``contacts``."""

    call_id: str
    cseq: int
    flow: Flow
    contacts: tuple[ContactChange, ...] = ()
    wildcard: bool = False
    user_agent: str = ""
    path: tuple[str, ...] = ()
    received: str | None = None

    def __post_init__(self) -> None:
        if self.wildcard and self.contacts:
            raise InvalidChangesError("Contact: * must be the only Contact")
