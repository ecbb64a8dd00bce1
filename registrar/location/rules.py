"""RFC 3261 §10.3 registration rules as one pure function over an AOR's bindings.

Both backends call `plan_register` with the AOR's current bindings and store what it returns, so the
memory and Redis stores cannot disagree on semantics. Pure: ``now`` is an argument; no I/O.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

from registrar.location.binding import Binding, ordered
from registrar.location.changes import OverflowPolicy, RegisterChanges
from registrar.location.contact_key import contact_key
from registrar.location.errors import StaleCSeqError, TooManyContactsError
from registrar.location.events import (
    BindingAdded,
    BindingFlowLost,
    BindingRefreshed,
    BindingRemoved,
    LocationEvent,
)
from sipcore.records import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The AOR's live bindings after the REGISTER (ordered, for the 200 OK Contact list) and what
    changed. Bindings that had expired before ``now`` are gone from ``bindings`` without an event."""

    bindings: tuple[Binding, ...]
    events: tuple[LocationEvent, ...]


def plan_register(
    aor: str,
    current: tuple[Binding, ...] | list[Binding],
    changes: RegisterChanges,
    now: float,
    max_contacts: int | None = None,
    policy: OverflowPolicy = OverflowPolicy.REJECT,
) -> ApplyResult:
    """Apply one REGISTER to ``current``; raise a `LocationError` (and change nothing) if it is refused.

    - same Call-ID and CSeq <= stored: `StaleCSeqError` (500), for a contact or for ``Contact: *``;
    - a different Call-ID replaces the binding whatever its CSeq;
    - ``expires == 0`` removes; ``Contact: *`` removes all;
    - over ``max_contacts`` (None or 0: no limit): `reject` refuses a REGISTER that adds a binding;
      `drop_oldest` evicts the least recently registered bindings this REGISTER did not write, and
      refuses only when the REGISTER alone lists more than the limit.
    """
    live = [b for b in current if b.expires_at > now]
    call_id, cseq = changes.call_id, changes.cseq

    if changes.wildcard:
        for b in live:
            _check_cseq(b, call_id, cseq)
        return ApplyResult((), tuple(BindingRemoved(b, "wildcard") for b in ordered(live)))

    if len(changes.contacts) == 1 and len(live) <= 1:
        quick = _one_contact(aor, live, changes, now)
        if quick is not None:
            return quick
    return _plan_general(aor, live, changes, now, max_contacts, policy)


def _plan_general(
    aor: str,
    live: list[Binding],
    changes: RegisterChanges,
    now: float,
    max_contacts: int | None,
    policy: OverflowPolicy,
) -> ApplyResult:
    call_id, cseq = changes.call_id, changes.cseq
    # One slot per binding identity: (stored binding or None, binding after this REGISTER or None).
    slots = _Slots(live)
    written: list[int] = []
    user_agent = sys.intern(changes.user_agent)
    for change in changes.contacts:
        i = slots.find(change.contact, change.instance, change.reg_id)
        old = slots.before[i] if i is not None else None
        if old is not None:
            _check_cseq(old, call_id, cseq)
        if change.expires == 0:
            if i is not None:
                slots.after[i] = None
                if i in written:
                    written.remove(i)
            continue
        new = Binding(
            aor=aor,
            contact=change.contact,
            expires_at=now + change.expires,
            q=change.q,
            call_id=call_id,
            cseq=cseq,
            flow=changes.flow,
            registered_at=now,
            instance=change.instance,
            reg_id=change.reg_id,
            user_agent=user_agent,
            path=changes.path,
            received=changes.received,
        )
        if i is None:
            i = slots.add(new)
        else:
            slots.after[i] = new
        if i not in written:
            written.append(i)

    dropped: set[int] = set()
    count = sum(1 for b in slots.after if b is not None)
    if max_contacts and count > max_contacts:
        adds = any(slots.before[i] is None for i in written)
        if len(written) > max_contacts or (policy is OverflowPolicy.REJECT and adds):
            raise TooManyContactsError(f"{aor}: more than {max_contacts} contacts")
        if policy is OverflowPolicy.DROP_OLDEST:
            evictable = [i for i, b in enumerate(slots.after) if b is not None and i not in written]
            evictable.sort(key=lambda i: slots.after[i].registered_at)  # type: ignore[union-attr]
            for i in evictable[: count - max_contacts]:
                dropped.add(i)
                slots.after[i] = None

    events: list[LocationEvent] = []
    for i, old in enumerate(slots.before):
        if old is not None and slots.after[i] is None:
            events.append(BindingRemoved(old, "dropped" if i in dropped else "unregistered"))
    for i in written:
        written_now, stored = slots.after[i], slots.before[i]
        assert written_now is not None
        events.append(BindingAdded(written_now) if stored is None else BindingRefreshed(written_now, stored))
    return ApplyResult(ordered([b for b in slots.after if b is not None]), tuple(events))


def _one_contact(aor: str, live: list[Binding], changes: RegisterChanges, now: float) -> ApplyResult | None:
    """The everyday REGISTER: one Contact, and either no binding yet or the phone's own binding (same
    Contact text, instance and reg-id). Same result as the general walk below (one binding never
    exceeds a limit: 0 means none); None for anything else, such as a binding that only matches
    after canonicalisation."""
    change = changes.contacts[0]
    old = live[0] if live else None
    if old is not None and (
        old.contact != change.contact or old.instance != change.instance or old.reg_id != change.reg_id
    ):
        return None
    if old is not None:
        _check_cseq(old, changes.call_id, changes.cseq)
    if change.expires == 0:
        return ApplyResult((), ()) if old is None else ApplyResult((), (BindingRemoved(old, "unregistered"),))
    new = Binding(
        aor, change.contact, now + change.expires, change.q, changes.call_id, changes.cseq, changes.flow, now,
        change.instance, change.reg_id, sys.intern(changes.user_agent), changes.path, changes.received,
    )  # fmt: skip
    return ApplyResult((new,), (BindingAdded(new) if old is None else BindingRefreshed(new, old),))


class _Slots:
    """The AOR's bindings during one REGISTER. Matching tries plain string equality first (a phone
    refreshes with the very Contact it registered) and canonicalises URIs only when that fails: the
    canonical form is the costliest step of a refresh."""

    __slots__ = ("after", "before", "keys")

    def __init__(self, live: list[Binding]) -> None:
        self.before: list[Binding | None] = list(live)
        self.after: list[Binding | None] = list(live)
        self.keys: list[str | None] = [None] * len(live)

    def add(self, binding: Binding) -> int:
        self.before.append(None)
        self.after.append(binding)
        self.keys.append(None)
        return len(self.after) - 1

    def find(self, contact: str, instance: str | None, reg_id: int | None) -> int | None:
        refs = [a if a is not None else b for a, b in zip(self.after, self.before, strict=True)]
        for i, ref in enumerate(refs):
            if (
                ref is not None
                and ref.contact == contact
                and ref.instance == instance
                and ref.reg_id == reg_id
            ):
                return i
        if not refs:
            return None
        key = contact_key(contact, instance, reg_id)
        keys = self.keys
        for i, ref in enumerate(refs):
            if ref is None:
                continue
            if keys[i] is None:
                keys[i] = ref.key
            if keys[i] == key:
                return i
        return None


def plan_flow_closed(
    current: tuple[Binding, ...] | list[Binding], connection_id: str
) -> tuple[tuple[Binding, ...], tuple[LocationEvent, ...]]:
    """A TCP connection closed (Kamailio-style): outbound bindings (reg-id) on it are removed — they
    exist only through their flow; the others are kept with ``flow_alive=False`` so the proxy falls
    back to their Contact / received address."""
    kept: list[Binding] = []
    events: list[LocationEvent] = []
    for b in current:
        if b.flow.connection_id != connection_id or not b.flow_alive:
            kept.append(b)
        elif b.is_outbound:
            events.append(BindingRemoved(b, "flow_closed"))
        else:
            dead = replace(b, flow_alive=False)
            kept.append(dead)
            events.append(BindingFlowLost(dead))
    return tuple(kept), tuple(events)


def _check_cseq(stored: Binding, call_id: str, cseq: int) -> None:
    if stored.call_id == call_id and cseq <= stored.cseq:
        raise StaleCSeqError(f"CSeq {cseq} <= stored {stored.cseq} for Call-ID {call_id}")
