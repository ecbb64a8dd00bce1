"""What the call controller asks its adapter to do, and what it is told back.

Actions are plain values; the adapter performs them in order. Requests sent with a ``key`` get a
client transaction, and what happens to it (response, time-out, transport error) comes back to the
controller with that key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calls.call_ended import CallEnded
from calls.dialog_record import DialogRecord
from calls.model import Branch, Destination, NotifyCopy, Relay
from routing.feature_codes import ForwardingChange
from routing.toll_fraud import Admission
from sipcore.flow import Flow
from sipcore.message import Request, Response
from sipcore.records import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send through a new client transaction; its fate comes back with ``key`` (None: nobody waits
    for the answer, e.g. a CANCEL or the BYE of a cut-off, still retransmitted by its transaction)."""

    request: Request
    dest: Destination
    key: Branch | Relay | NotifyCopy | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class SendStateless:
    """Send once, no transaction (the ACK of a 2xx, forwarded end to end)."""

    request: Request
    dest: Destination


@fast_init
@dataclass(frozen=True, slots=True)
class Reply:
    """Answer ``request`` with a response we make (through its server transaction, if any)."""

    request: Request
    flow: Flow
    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class Respond:
    """Answer ``request`` with a response built already (one relayed from a branch)."""

    request: Request
    flow: Flow
    response: Response


@fast_init
@dataclass(frozen=True, slots=True)
class ForwardResponse:
    """A response forwarded statelessly by its Via (a 2xx retransmission after the transaction)."""

    response: Response
    transport: str  # "UDP" | "TCP"
    address: tuple[str, int]


@fast_init
@dataclass(frozen=True, slots=True)
class LookupContacts:
    """Find the registered contacts of ``aor``; answer with ``CallController.on_contacts``. A negative
    ``branch_id`` is an unsolicited NOTIFY waiting for them, not a call's branch."""

    call_id: str
    branch_id: int
    aor: str


@fast_init
@dataclass(frozen=True, slots=True)
class ResolveHost:
    """Resolve ``host`` to an address; answer with ``CallController.on_resolved``."""

    host: str
    key: Any  # what waits for it: handed back as is


@fast_init
@dataclass(frozen=True, slots=True)
class CountCall:
    """A call now counts (+1) or no longer counts (-1) against ``account_id`` (limits, call waiting)."""

    account_id: str
    delta: int


@fast_init
@dataclass(frozen=True, slots=True)
class Admit:
    """A call placed by an account counts against it (as `CountCall` +1) and in its call-rate windows
    (routing.toll_fraud.Admission); where hosts share the counts the adapter checks it platform-wide
    first, the rest of the call's actions waiting for the answer, and refuses it as routing would
    (`CallController.refuse`). Its end takes back the +1 as any call's (`CountCall` -1)."""

    call_id: str
    admission: Admission


@fast_init
@dataclass(frozen=True, slots=True)
class Tally:
    """Add ``delta`` to this process's share of platform-wide tallies (routing.toll_fraud): a call
    placed counts in its account's rate windows; a priced leg holds what it may cost."""

    keys: tuple[str, ...]
    delta: int
    call_id: str = ""  # a leg's hold (routing.toll_fraud.hold_keys): the call it is for


@fast_init
@dataclass(frozen=True, slots=True)
class ChangeForwarding:
    """A feature code changed an account's forwarding."""

    change: ForwardingChange


@fast_init
@dataclass(frozen=True, slots=True)
class EndCall:
    """A call is over (finished or refused): the facts for the rater and the CDR; ``cutoff`` names
    why the proxy ended it itself (max_duration, prepaid_limit, no_ack), else empty."""

    ended: CallEnded
    cutoff: str = ""


@fast_init
@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A call is answered: what it needs to outlive a crash (the call journal keeps it until its CDR
    is durable, ``server.call_journal``)."""

    record: DialogRecord


@fast_init
@dataclass(frozen=True, slots=True)
class NotifyAnswered:
    """A message-waiting NOTIFY copy got its final answer: ``status`` from the phone, or 408 / 503
    when it never answered or could not be reached (``local``). For the adapter's counters and log."""

    account_id: str
    contact: str
    status: int
    local: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class TrunkFailover:
    """A call leaves ``trunk``, which answered ``status`` (408: no answer within its
    ``failover_timeout``, or a time-out; 503: not reachable), for ``next_trunk``. For the adapter's
    counter and log."""

    call_id: str
    trunk: str
    status: int
    next_trunk: str


@fast_init
@dataclass(frozen=True, slots=True)
class Transit:
    """A peer host's request relayed over one of our phones' flows (calls.cluster_route): no call
    here, only counted (``sipcore_transit_requests_total``)."""

    method: str


@fast_init
@dataclass(frozen=True, slots=True)
class PeerSilent:
    """A call's INVITE through another host of the platform (``peer``: its name,
    ``calls.cluster_route.peer_name``) had no answer at all within ``answer_wait``: that host is dead
    (the adapter marks it down in its peer probes, ``TrunkMonitor.mark_down``)."""

    peer: str


Action = (
    SendRequest | SendStateless | Reply | Respond | ForwardResponse | LookupContacts | ResolveHost | CountCall
    | Admit | ChangeForwarding | EndCall | CallAnswered | NotifyAnswered | TrunkFailover | Transit | PeerSilent | Tally
)  # fmt: skip
