"""Call facts the controller hands to the rater and CDR writer when a call ends (or is refused)."""

from __future__ import annotations

from dataclasses import dataclass

from sipcore.records import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class CallEnded:
    """One call leg's facts, in epoch seconds. ``disposition``: answered, busy, no_answer, failed,
    cancelled, refused. ``hangup_by``: caller, callee, system (cut-off, max duration), orphan
    (restored after a crash, no BYE came: ``end`` estimated) or None.

    ``billed_account_id`` pays an outside leg (the caller, or the forwarding account on a forwarded
    leg); ``rated`` says whether the leg leaves through the trunk and is priced by the rater.
    """

    call_id: str
    leg: str  # "0" for the caller's leg; "f<N>" for a forwarded outside leg
    direction: str  # outbound | inbound | internal | forwarded
    customer_id: str | None
    account_id: str | None
    billed_account_id: str | None
    caller: str
    dialed: str
    normalised: str
    callee_account_id: str | None
    did: str | None
    start: float
    answer: float | None
    end: float
    disposition: str
    sip_status: int
    hangup_by: str | None
    rated: bool
    reason: str = ""
    holds: tuple[tuple[str, str, int], ...] = ()
    """(customer, account, micro-units) held against daily caps by the call's priced legs: released
    when the call is settled (routing.toll_fraud.hold_keys)."""

    def shifted(self, by: float) -> CallEnded:
        """The same facts with start, answer and end moved by ``by`` seconds (one clock to another)."""
        return CallEnded(
            self.call_id, self.leg, self.direction, self.customer_id, self.account_id, self.billed_account_id,
            self.caller, self.dialed, self.normalised, self.callee_account_id, self.did, self.start + by,
            self.answer + by if self.answer is not None else None, self.end + by, self.disposition,
            self.sip_status, self.hangup_by, self.rated, self.reason, self.holds,
        )  # fmt: skip

    @property
    def duration(self) -> int:
        """Answered seconds, rounded up to whole seconds (the rater bills from this)."""
        if self.answer is None:
            return 0
        seconds = self.end - self.answer
        whole = int(seconds)
        return whole + (1 if seconds - whole > 1e-6 else 0)


def disposition_for(status: int, cancelled: bool = False) -> str:
    if cancelled or status == 487:
        return "cancelled"
    if 200 <= status < 300:
        return "answered"
    if status in (486, 600):
        return "busy"
    if status in (408, 480):
        return "no_answer"
    return "failed"
