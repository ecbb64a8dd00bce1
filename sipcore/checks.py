"""Request checks every element applies before routing (RFC 3261 §8.2.1–§8.2.2, §16.3), as pure code.

Each returns a SipError carrying the answer (416, 483, 420…) or None.
"""

from __future__ import annotations

from .errors import SipError
from .message import Request

SUPPORTED_OPTIONS: frozenset[str] = frozenset({"path", "outbound", "gruu", "replaces", "timer"})
SCHEMES = frozenset({"sip", "sips", "tel"})


def check_scheme(req: Request) -> SipError | None:
    if req.ruri.scheme not in SCHEMES:
        return SipError("Unsupported URI Scheme", 416)
    return None


def check_max_forwards(req: Request) -> SipError | None:
    mf = req.max_forwards
    if mf is not None and mf <= 0:
        return SipError("Too Many Hops", 483)
    return None


def _unsupported(req: Request, header: str, supported: frozenset[str]) -> list[str]:
    return [t for t in req.option_tags(header) if t.lower() not in supported]


def check_proxy_require(req: Request, supported: frozenset[str] = SUPPORTED_OPTIONS) -> SipError | None:
    """§16.3 step 4: a proxy refuses Proxy-Require extensions it does not know (420 + Unsupported)."""
    bad = _unsupported(req, "proxy-require", supported)
    if bad:
        return SipError("Bad Extension", 420, (("Unsupported", ", ".join(bad)),))
    return None


def check_require(req: Request, supported: frozenset[str] = SUPPORTED_OPTIONS) -> SipError | None:
    """§8.2.2.3: a UAS (registrar, OPTIONS answered locally) refuses unknown Require extensions.
    Never applied to ACK or CANCEL (they cannot be rejected)."""
    if req.method in ("ACK", "CANCEL"):
        return None
    bad = _unsupported(req, "require", supported)
    if bad:
        return SipError("Bad Extension", 420, (("Unsupported", ", ".join(bad)),))
    return None
