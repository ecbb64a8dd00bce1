"""The memory location store replicated across the worker processes of one server (no Redis).

Each worker keeps a full `MemoryLocationStore`, so lookups (the proxy's hot path) stay local and
synchronous. Writes have one writer per AOR: REGISTERs are routed to a worker by their To user
(`sipcore.ownership`), that worker plans and applies them, then publishes the AOR's whole binding
tuple to the others, which install it as is. A whole snapshot (not a delta) makes replicas converge
whatever they missed in between, and messages from one worker arrive in the order it sent them.

A closed TCP connection is announced to every worker; each AOR with a binding on it is fixed by its
last writer only, which publishes the result, so no replica applies a close before a REGISTER that
the writer applied first. Only worker 0 writes the state file; every worker loads it at start.

Replication messages are msgpack arrays, the bindings inside encoded by `codec` (the state file's
format): ``[1, writer, aor, [binding, ...]]`` (snapshot) and ``[2, connection_id]`` (flow closed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import msgpack

from registrar.location import codec
from registrar.location.binding import Binding
from registrar.location.changes import OverflowPolicy, RegisterChanges
from registrar.location.events import LocationEvent
from registrar.location.memory import MemoryLocationStore
from registrar.location.rules import ApplyResult, plan_flow_closed

log = logging.getLogger(__name__)

SNAPSHOT = 1
FLOW_CLOSED = 2


class ReplicationError(ValueError):
    """A replication message that cannot be read (dropped by the receiver)."""


def encode_snapshot(writer: int, aor: str, bindings: tuple[Binding, ...]) -> bytes:
    return msgpack.packb((SNAPSHOT, writer, aor, [codec.encode(b) for b in bindings]), use_bin_type=True)


def encode_flow_closed(connection_id: str) -> bytes:
    return msgpack.packb((FLOW_CLOSED, connection_id), use_bin_type=True)


def decode(payload: bytes) -> tuple[int, int, str, tuple[Binding, ...]] | tuple[int, str]:
    """``(SNAPSHOT, writer, aor, bindings)`` or ``(FLOW_CLOSED, connection_id)``."""
    try:
        v = msgpack.unpackb(payload, use_list=False, raw=False)
        if v[0] == SNAPSHOT:
            writer, aor, items = v[1], v[2], v[3]
            if not isinstance(writer, int) or not isinstance(aor, str):
                raise TypeError("bad snapshot header")
            return SNAPSHOT, writer, aor, tuple(codec.decode(aor, item) for item in items)
        if v[0] == FLOW_CLOSED and isinstance(v[1], str):
            return FLOW_CLOSED, v[1]
    except ReplicationError:
        raise
    except Exception as exc:
        raise ReplicationError(f"unreadable replication message: {exc!r}") from exc
    raise ReplicationError(f"unknown replication message kind {v[0]!r}")


class ReplicatedLocationStore(MemoryLocationStore):
    """One worker's replica. ``publish`` hands a replication message to every other worker."""

    def __init__(
        self,
        state_path: str | Path | None,
        index: int,
        publish: Callable[[bytes], object],
        *,
        flush_interval: float = 0.2,
        flush_batch: int = 2000,
    ) -> None:
        super().__init__(state_path, flush_interval=flush_interval, flush_batch=flush_batch)
        self.index = index
        self._publish = publish
        self._writers: dict[str, int] = {}  # AOR -> the worker that last wrote it

    # -- start: everyone reads the state file, only worker 0 keeps writing it --------------------------

    def load(self, now: float) -> int:
        restored = super().load(now)
        if self.index != 0 and self._state is not None:
            self._state.close()
            self._state = None
            self._dirty.clear()
        return restored

    # -- the writer side ---------------------------------------------------------------------------------

    def register(
        self,
        aor: str,
        changes: RegisterChanges,
        now: float,
        max_contacts: int | None = None,
        policy: OverflowPolicy = OverflowPolicy.REJECT,
    ) -> ApplyResult:
        before = self.bindings_of(aor)
        result = super().register(aor, changes, now, max_contacts, policy)
        after = self.bindings_of(aor)
        if after is not before:  # stored something new: the others install the same tuple
            self._wrote(aor, after)
        return result

    def close_flow(self, connection_id: str) -> list[LocationEvent]:
        """Our TCP connection closed: tell every worker, and fix the AORs we wrote."""
        self._publish(encode_flow_closed(connection_id))
        return self._flow_closed(connection_id)

    def sweep(self, now: float) -> list[Binding]:
        """Every replica expires bindings on its own (same clock, same expiry times)."""
        expired = super().sweep(now)
        for b in expired:
            if b.aor not in self._aors:
                self._writers.pop(b.aor, None)
        return expired

    # -- the replica side --------------------------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        """A replication message from another worker; unreadable ones are logged and dropped."""
        try:
            message = decode(payload)
        except ReplicationError:
            log.exception("replication message dropped")
            return
        if message[0] == SNAPSHOT:
            _, writer, aor, bindings = message  # type: ignore[misc]
            self.install(aor, bindings)
            if bindings:
                self._writers[aor] = writer
            else:
                self._writers.pop(aor, None)
        else:
            self._flow_closed(message[1])  # type: ignore[arg-type]

    # -- internals ---------------------------------------------------------------------------------------

    def _wrote(self, aor: str, bindings: tuple[Binding, ...]) -> None:
        if bindings:
            self._writers[aor] = self.index
        else:
            self._writers.pop(aor, None)
        self._publish(encode_snapshot(self.index, aor, bindings))

    def _flow_closed(self, connection_id: str) -> list[LocationEvent]:
        """Drop the flow from the index; re-plan the AORs we last wrote (their writer's job) and
        publish them. The other AORs on it are fixed by the snapshot their writer publishes."""
        owners = self._flows.pop(connection_id, ())
        events: list[LocationEvent] = []
        for aor in (owners,) if isinstance(owners, str) else tuple(owners):
            rec = self._aors.get(aor)
            if rec is None or self._writers.get(aor, 0) != self.index:
                continue
            kept, evs = plan_flow_closed(rec.bindings, connection_id)
            if evs:
                events.extend(evs)
                self._put(aor, rec, kept)
                self._wrote(aor, self.bindings_of(aor))
        return events
