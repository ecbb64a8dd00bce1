"""Writing back what a process registered while Redis was unreachable (`fallback`): the pure merge.

Why a merge and not an overwrite: during the outage other hosts may have written the same AOR in
Redis (or Redis kept writes this process thought lost). Each binding key keeps the newest REGISTER
(RFC 3261 §10.3 steps 6-7: the same Call-ID orders by CSeq; across Call-IDs the later registration
wins), a binding removed locally (expires=0, Contact: *) is removed unless Redis holds a newer
registration of it, and nothing expired is written back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from registrar.location.binding import Binding, ordered


def newer(a: Binding, b: Binding) -> bool:
    """Is ``a`` a later registration of the same contact than ``b``?"""
    if a.call_id == b.call_id:
        return a.cseq > b.cseq
    return a.registered_at > b.registered_at


def merge_written_back(
    remote: Iterable[Binding], written: Mapping[str, Binding], removed: Mapping[str, float], now: float
) -> tuple[Binding, ...]:
    """The AOR's bindings once ``written`` (key -> binding registered locally during the outage) and
    ``removed`` (key -> when it was removed locally) are folded into ``remote`` (what Redis holds)."""
    by_key = {b.key: b for b in remote if b.expires_at > now}
    for key, at in removed.items():
        b = by_key.get(key)
        if b is not None and b.registered_at <= at:
            del by_key[key]
    for key, b in written.items():
        if b.expires_at <= now:
            continue
        cur = by_key.get(key)
        if cur is None or newer(b, cur):
            by_key[key] = b
    return ordered(list(by_key.values()))
