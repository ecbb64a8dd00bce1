"""The call model: where a request goes, each forwarded INVITE (branch), each call, each relayed
in-dialog request. Plain data: the controller changes it, nothing here does I/O or reads a clock.

Branches and relays name their call by Call-ID rather than holding it, so a call and its branches
form no reference cycle (the server runs with the cyclic collector off: docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from calls.identity import Source
from routing.plan_events import RingBranch
from sipcore.flow import Flow
from sipcore.message import Request, Response
from sipcore.records import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class Destination:
    """Where a forwarded request is sent: an address, and the phone's flow when it registered one."""

    transport: str  # "udp" | "tcp"
    host: str
    port: int
    flow: Flow | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Contact:
    """One registered contact to ring: its Request-URI and the destination (its flow, or the first
    hop of ``route``). ``route``: the Path its REGISTER recorded (RFC 3327), sent as Route headers."""

    uri: str
    dest: Destination
    route: tuple[str, ...] = ()


@dataclass(slots=True, eq=False)
class Branch:
    """One forwarded INVITE: a contact of a plan branch (the key of its client transaction)."""

    call_id: str
    plan_branch: int
    request: Request
    dest: Destination
    provisional: bool = False
    cancel_pending: bool = False
    cancel_sent: bool = False  # a branch is CANCELled once (plan and caller may both ask)
    final: int | None = None
    response: Response | None = None
    auth_tried: bool = False
    trunk: str | None = None  # the trunk it went to (a call to an outside number)
    trunks_left: tuple[str, ...] = ()  # the trunks to fail over to, in order
    give_up_at: float | None = None  # no answer at all by then: fail over (only with trunks left)


@dataclass(slots=True, eq=False)
class Relay:
    """An in-dialog request forwarded through us (the key of its client transaction)."""

    request: Request
    flow: Flow
    call_id: str | None  # the answered call it belongs to, if we know it
    final: bool = False  # its final answer went up already


@dataclass(slots=True, eq=False)
class NotifyCopy:
    """An unsolicited message-waiting NOTIFY sent to one registered contact (the key of its client
    transaction): its answer is counted, never relayed (the media service was answered already)."""

    account_id: str
    contact: str
    final: bool = False


@dataclass(slots=True, eq=False)
class Call:
    call_id: str
    invite: Request
    flow: Flow
    caller_dest: Destination
    caller_tag: str
    direction: str  # outbound | inbound | internal | forwarded
    customer_id: str | None
    account_id: str | None
    caller_number: str
    dialed: str
    normalised: str
    plan: Any  # routing.CallPlan or routing.plan_direct.DirectPlan
    started: float
    did: str | None = None
    rated: bool = False
    max_duration: int | None = None
    holds: tuple[tuple[str, str, int], ...] = ()  # (customer, account, micros) its priced legs hold
    caller_public: str | None = None  # the caller account's public number
    caller_extension: str | None = None
    source: Source = Source.PHONE  # who sent the INVITE, for identity (RFC 3325)
    privacy: frozenset[str] = frozenset()  # the caller's Privacy values
    preferred: str | None = None  # one of the account's own numbers its P-Preferred-Identity chose
    branches: dict[int, list[Branch]] = field(default_factory=dict)
    rings: dict[int, RingBranch] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)  # plan branches cancelled before their contacts came
    finals: list[Response] = field(default_factory=list)
    ringing_at: float | None = None
    answered_at: float | None = None
    answered: Branch | None = None
    callee_tag: str | None = None
    callee_contact: str | None = None
    callee_to: str | None = None
    callee_account_id: str | None = None
    billed_account_id: str | None = None
    caller_cseq: int = 0
    callee_cseq: int = 0
    done: bool = False  # the caller has (or is about to get) its final answer
    ended: bool = False
    cancelled: bool = False
    hangup_by: str | None = None
    # deadlines (the controller's clock); None when not armed
    plan_at: float | None = None
    cancel_at: float | None = None  # a CANCELled branch that never answers must not hold the caller
    cutoff_at: float | None = None
    cutoff_reason: str = ""
    ack_at: float | None = None  # §13.3.1.4: a 2xx not ACKed within 64*T1 ends the dialog
    trunk_at: float | None = None  # the earliest give_up_at of its trunk branches
    orphan_at: float | None = None  # restored after a crash: ended then unless a request is seen
    seen: float | None = None  # restored: the last in-dialog request relayed since the restart
    alive_until: float | None = None  # restored: the last time the crashed process was alive

    def pending(self) -> bool:
        """Some branch has no final answer yet."""
        return any(b.final is None for subs in self.branches.values() for b in subs)
