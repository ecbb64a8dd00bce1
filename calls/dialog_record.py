"""What an answered call needs to outlive the process: the facts of its CDR and of its dialog.

The controller hands a ``DialogRecord`` to its adapter when a call is answered (``CallAnswered``);
the adapter keeps it in the call journal (``server.call_journal``) until the call's CDR is durable.
After a crash the restarted server gives it back to ``CallController.restore``, which makes the call a
dialog again: a BYE through the new process ends it exactly, and a call whose BYE never comes is
ended at its orphan time-out with an estimated end.

Times are in the clock of whoever holds the record: the controller's (monotonic) in actions, wall
clock in the journal (the adapter moves them). ``to_wire`` / ``from_wire`` give a msgpack-ready list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calls.model import Destination
from sipcore.flow import Flow
from sipcore.records import fast_init

WIRE_VERSION = 1


@fast_init
@dataclass(frozen=True, slots=True)
class DialogRecord:
    call_id: str
    caller_tag: str
    callee_tag: str
    direction: str
    customer_id: str | None
    account_id: str | None
    billed_account_id: str | None
    caller_number: str
    dialed: str
    normalised: str
    callee_account_id: str | None
    did: str | None
    rated: bool
    started: float
    answered_at: float
    cutoff_at: float  # max duration or prepaid limit: the call is cut (BYE both ways) then
    cutoff_reason: str
    caller_dest: Destination  # where in-dialog requests from the callee go (the caller's flow)
    callee_dest: Destination  # where in-dialog requests from the caller go (the answering branch)
    caller_from: str  # the caller's From (with its tag): a cut-off BYE to the callee is sent as it
    caller_contact: str | None  # the caller's remote target (a cut-off BYE to the caller)
    invite_cseq: int
    callee_to: str | None  # the To of the 2xx (with the callee's tag)
    callee_contact: str | None  # the callee's remote target
    alive_until: float | None = None  # restored after a crash: the last time the old process was alive

    def to_wire(self) -> list[Any]:
        return [
            WIRE_VERSION, self.call_id, self.caller_tag, self.callee_tag, self.direction, self.customer_id,
            self.account_id, self.billed_account_id, self.caller_number, self.dialed, self.normalised,
            self.callee_account_id, self.did, self.rated, self.started, self.answered_at, self.cutoff_at,
            self.cutoff_reason, _dest_wire(self.caller_dest), _dest_wire(self.callee_dest),
            self.caller_from, self.caller_contact, self.invite_cseq, self.callee_to, self.callee_contact,
            self.alive_until,
        ]  # fmt: skip

    @staticmethod
    def from_wire(wire: list[Any]) -> DialogRecord:
        """Raises ValueError on a list that is not a record of a known version."""
        if not isinstance(wire, list) or len(wire) != 26 or wire[0] != WIRE_VERSION:
            raise ValueError("not a dialog record")
        w = wire
        return DialogRecord(
            str(w[1]), str(w[2]), str(w[3]), str(w[4]), w[5], w[6], w[7], str(w[8]), str(w[9]), str(w[10]),
            w[11], w[12], bool(w[13]), float(w[14]), float(w[15]), float(w[16]), str(w[17]),
            _dest_of(w[18]), _dest_of(w[19]), str(w[20]), w[21], int(w[22]), w[23], w[24],
            float(w[25]) if w[25] is not None else None,
        )  # fmt: skip

    def shifted(self, by: float) -> DialogRecord:
        """The same record with its times moved by ``by`` seconds (one clock to another)."""
        return DialogRecord(
            self.call_id, self.caller_tag, self.callee_tag, self.direction, self.customer_id,
            self.account_id, self.billed_account_id, self.caller_number, self.dialed, self.normalised,
            self.callee_account_id, self.did, self.rated, self.started + by, self.answered_at + by,
            self.cutoff_at + by, self.cutoff_reason, self.caller_dest, self.callee_dest, self.caller_from,
            self.caller_contact, self.invite_cseq, self.callee_to, self.callee_contact,
            self.alive_until + by if self.alive_until is not None else None,
        )  # fmt: skip


def _dest_wire(dest: Destination) -> list[Any]:
    f = dest.flow
    flow = (
        [f.transport, f.remote[0], f.remote[1], f.local[0], f.local[1], f.conn_id] if f is not None else None
    )
    return [dest.transport, dest.host, dest.port, flow]


def _dest_of(wire: Any) -> Destination:
    transport, host, port, flow = wire
    f = None
    if flow is not None:
        ft, rh, rp, lh, lp, conn = flow
        # a TCP connection dies with the process: the new one reaches the party at its address
        if ft == "udp":
            f = Flow(str(ft), (str(rh), int(rp)), (str(lh), int(lp)), conn)
    return Destination(str(transport), str(host), int(port), f)
