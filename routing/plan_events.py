"""What the proxy feeds a CallPlan (branch events, past tense) and what the plan asks it to do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from routing.targets import Target


class DiversionReason(StrEnum):
    """RFC 5806 reason tokens (follow-me is ours; the proxy may map it to ``unknown`` on the wire)."""

    UNCONDITIONAL = "unconditional"
    USER_BUSY = "user-busy"
    NO_ANSWER = "no-answer"
    UNAVAILABLE = "unavailable"
    FOLLOW_ME = "follow-me"


@dataclass(frozen=True, slots=True)
class Diversion:
    """One forwarding step; the proxy formats it as a Diversion (or History-Info) header."""

    reason: DiversionReason
    diverting_number: str
    counter: int
    account_id: str


# Events, fed with ``CallPlan.on_branch_event(branch_id, event, now)``.


@dataclass(frozen=True, slots=True)
class BranchAnswered:
    """A 2xx came back on the branch."""


@dataclass(frozen=True, slots=True)
class BranchBusy:
    """486/600 from the phone."""


@dataclass(frozen=True, slots=True)
class BranchNotAnswered:
    """The far end gave up ringing (408/480 after ringing)."""


@dataclass(frozen=True, slots=True)
class BranchUnreachable:
    """No contact, or every contact failed (transport error, timeout, 503)."""


@dataclass(frozen=True, slots=True)
class BranchFailed:
    """Any other final failure, e.g. 603 Decline or 404 from the trunk."""

    status: int
    reason: str = ""


BranchEvent = BranchAnswered | BranchBusy | BranchNotAnswered | BranchUnreachable | BranchFailed


# Actions, returned by every CallPlan method.


@dataclass(frozen=True, slots=True)
class RingBranch:
    """Start a branch: ring ``target`` showing ``caller_id``.

    ``diversions`` is most-recent first (empty on a direct call). ``billed_account_id`` is the account
    that pays for a forwarded leg through the trunk (``rated``); ``max_duration`` caps it (prepaid,
    daily cap); ``hold_micros`` is held against the payer's daily caps while the call lasts.
    """

    branch_id: int
    target: Target
    caller_id: str
    caller_display: str = ""
    diversions: tuple[Diversion, ...] = ()
    billed_account_id: str | None = None
    rated: bool = False
    max_duration: int | None = None
    hold_micros: int = 0


@dataclass(frozen=True, slots=True)
class CancelBranch:
    branch_id: int


@dataclass(frozen=True, slots=True)
class ConnectBranch:
    """The call is answered on this branch: pass its 2xx to the caller. The plan is over."""

    branch_id: int


@dataclass(frozen=True, slots=True)
class FailCall:
    """Nobody took the call: answer the caller ``status reason`` (with ``warning`` if not empty)."""

    status: int
    reason: str
    warning: str = ""


Action = RingBranch | CancelBranch | ConnectBranch | FailCall
