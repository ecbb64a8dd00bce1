"""The plan for an incoming call, driven by the proxy like an aioquic connection.

``plan_incoming(...)`` returns a :class:`CallPlan`; the proxy calls ``start(now)``, then feeds
``on_branch_event(branch_id, event, now)`` and ``on_timer(now)`` (when ``next_deadline()`` passes) and
executes the returned actions (ring, cancel, connect, fail). The plan never reads the clock.

What happens when an account is called (DOMAIN.md "Calls"), in order: follow-me (own phones
silent; voicemail last resort), permanent forwarding, unreachable (no contact / every contact failed),
busy (486, or in a call without call waiting, or at its call limit), no answer after the rule's delay
(staggered targets, voicemail last resort), else voicemail if enabled, else the failure. A forward
target is read as the forwarding user would dial it; an internal target applies that account's own
rules in turn. Loops stop: no account is rung twice in one call, and at most ``hop_limit`` diversions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from routing.authorise import Authoriser, AuthoriseRequest, allow_all
from routing.dialplan import CONFERENCE_CODE, VOICEMAIL_CODE, DestinationKind, classify, trunk_number
from routing.forwarding import effective_forwards
from routing.model import (
    AccountRoute,
    CustomerRoute,
    Did,
    DidKind,
    ForwardKind,
    ForwardRule,
    ForwardTarget,
    Group,
    GroupStrategy,
    RoutingSetup,
    ShowCaller,
)
from routing.numbering import is_premium
from routing.plan_events import (
    Action,
    BranchEvent,
    ConnectBranch,
    Diversion,
    DiversionReason,
    FailCall,
    RingBranch,
)
from routing.plan_nodes import Fixed, Host, Leaf, Node, Outcome, Result, Slot, Stagger, Timers, failure
from routing.state import CallState
from routing.targets import AccountContacts, MediaService, Target

VOICEMAIL_KEYWORD = "voicemail"

_REASONS = {
    ForwardKind.PERMANENT: DiversionReason.UNCONDITIONAL,
    ForwardKind.BUSY: DiversionReason.USER_BUSY,
    ForwardKind.NO_ANSWER: DiversionReason.NO_ANSWER,
    ForwardKind.UNREACHABLE: DiversionReason.UNAVAILABLE,
}
_FALLBACK_OF = {
    Outcome.BUSY: ForwardKind.BUSY,
    Outcome.NO_ANSWER: ForwardKind.NO_ANSWER,
    Outcome.UNREACHABLE: ForwardKind.UNREACHABLE,
}
HANGUP_STATUS = (603, "Decline")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the number and name to show, and their account when on the platform (that
    account is never rung by this call: a forward back to the caller counts as a loop)."""

    number: str
    display: str = ""
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Leg:
    """How a branch presents itself: shown caller, diversion history, who pays an outside leg."""

    caller_id: str
    caller_display: str
    diversions: tuple[Diversion, ...] = ()
    billed_account_id: str | None = None


class CallPlan(Host):
    """One incoming call's routing state machine. Every method returns the actions to execute."""

    def __init__(
        self,
        setup: RoutingSetup,
        callee: AccountRoute | Did | Group,
        caller: Caller,
        state: CallState,
        authorise: Authoriser = allow_all,
    ) -> None:
        self.setup = setup
        self.callee = callee
        self.caller = caller
        self.state = state
        self.authorise = authorise
        self.timers = Timers()
        self.visited: set[str] = set()
        self.result: ConnectBranch | FailCall | None = None
        self._branches: dict[int, Leaf] = {}
        self._rung: dict[int, RingBranch] = {}
        self._next_branch = 0
        self._root: Node | None = None
        # every node made for this plan, finished or not (dispose). Typed by Host alone: annotated
        # again here, mypyc's build declares it twice and reports the list twice to the cyclic
        # collector, which then never frees a plan left in a cycle (tests/routing/test_plan_dispose.py)
        self.nodes = []

    # -- driven by the proxy ------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        if self._root is not None:
            raise RuntimeError("CallPlan.start called twice")
        out: list[Action] = []
        if self.caller.account_id is not None:  # never ring the caller back through a forward
            self.visited.add(self.caller.account_id)
        leg = _Leg(self.caller.number, self.caller.display)
        callee = self.callee
        if isinstance(callee, AccountRoute):
            root: Node = AccountNode(self, callee, leg)
        elif isinstance(callee, Did):
            root = did_node(self, callee, leg)
        else:
            root = group_node(self, callee, leg)
        self._root = root
        root.start(now, out)
        return out

    def on_branch_event(self, branch_id: int, event: BranchEvent, now: float) -> list[Action]:
        leaf = self._branches.pop(branch_id, None)
        out: list[Action] = []
        if leaf is not None and not leaf.done and self.result is None:
            leaf.on_event(event, now, out)
        return out

    def on_timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        for node, token in self.timers.pop_due(now):
            if not node.done and self.result is None:
                node.on_timer(token, now, out)
        return out

    def next_deadline(self) -> float | None:
        return None if self.result is not None else self.timers.next_deadline()

    def cancel(self) -> list[Action]:
        """The caller gave up: cancel every ringing branch; the plan is over."""
        out: list[Action] = []
        if self._root is not None and self.result is None:
            self._root.cancel(out)
            self.result = FailCall(487, "Request Terminated")
            self.timers.clear()
        return out

    @property
    def finished(self) -> bool:
        return self.result is not None

    def dispose(self) -> None:
        """Break the plan's reference cycles once the call is over.

        Nodes point at the plan and at their parents, parents at their children, and closures at
        both; left alone, every finished call would wait for the cyclic garbage collector, whose
        passes over a busy proxy's heap are what stalls it (measured: p95 call setup of seconds).
        Every node the plan made (``nodes``, finished subtrees a parent already let go of included)
        lets go of what it refers to (``Node.unlink``; tests/routing/test_plan_dispose.py: nothing
        left for the collector). After this the plan answers nothing."""
        for node in self.nodes:
            node.unlink()
        self.nodes.clear()
        self._root = None
        self._branches.clear()
        self._rung.clear()
        self.timers = Timers()
        self.visited.clear()

    def branch(self, branch_id: int) -> RingBranch:
        """What a branch rang (target, caller ID, diversions, billing) — for the proxy and the CDR."""
        return self._rung[branch_id]

    # -- Host, for the nodes ------------------------------------------------------------------

    def new_branch(self, leaf: Leaf) -> int:
        self._next_branch += 1
        self._branches[self._next_branch] = leaf
        return self._next_branch

    def record(self, ring: RingBranch) -> RingBranch:
        self._rung[ring.branch_id] = ring
        return ring

    def child_done(self, child: Node, result: Result, now: float, out: list[Action]) -> None:
        if result.outcome is Outcome.ANSWERED:
            self.result = ConnectBranch(result.branch_id)
        else:
            self.result = FailCall(result.status, result.reason, result.warning)
        out.append(self.result)
        self.timers.clear()

    # -- leaves -------------------------------------------------------------------------------

    def ring(self, target: Target, leg: _Leg, *, timeout: float | None = None, **extra: Any) -> Leaf:
        def make(branch_id: int) -> RingBranch:
            return self.record(
                RingBranch(
                    branch_id,
                    target,
                    leg.caller_id,
                    leg.caller_display,
                    leg.diversions,
                    leg.billed_account_id,
                    **extra,
                )
            )

        return Leaf(self, make, timeout)

    def voicemail(self, mailbox: str, leg: _Leg) -> Leaf:
        return self.ring(MediaService(self.setup.media_uri, "voicemail", mailbox=mailbox), leg)


def _contacts(account: AccountRoute) -> AccountContacts:
    return AccountContacts(account.account_id, account.customer_id, account.extension, account.sip_username)


def _is_busy(state: CallState, account: AccountRoute) -> bool:
    calls = state.calls_of(account.account_id)
    return calls >= account.max_calls or (calls > 0 and not account.call_waiting)


class AccountNode(Node):
    """Calls one account, applying its follow-me / forwarding / voicemail in DOMAIN.md's order."""

    __slots__ = ("account", "child", "leg", "phase", "rules")

    def __init__(self, plan: CallPlan, account: AccountRoute, leg: _Leg) -> None:
        super().__init__(plan)
        self.account = account
        self.leg = leg
        self.phase = ""
        self.child: Node | None = None
        self.rules: dict[ForwardKind, ForwardRule] = {}

    @property
    def plan(self) -> CallPlan:
        return self.host  # type: ignore[return-value]

    def _run(self, phase: str, child: Node, now: float, out: list[Action]) -> None:
        self.phase = phase
        self.child = self.adopt(child)
        child.start(now, out)

    def start(self, now: float, out: list[Action]) -> None:
        plan, acc = self.plan, self.account
        if acc.account_id in plan.visited:
            self.finish(failure(Outcome.LOOP, f"Forwarding loop: {acc.extension} already rung"), now, out)
            return
        plan.visited.add(acc.account_id)
        fm = acc.follow_me
        if fm is not None and fm.enabled and fm.targets:
            vm = acc.voicemail and fm.voicemail_last_resort
            child = targets_node(
                plan, acc, self.leg, fm.targets, DiversionReason.FOLLOW_ME, fm.show_caller, vm
            )
            self._run("follow_me", child, now, out)
            return
        self.rules = effective_forwards(acc, plan.state.overrides)
        if ForwardKind.PERMANENT in self.rules:
            self._fallback(ForwardKind.PERMANENT, None, now, out)
        elif not plan.state.is_registered(acc.account_id):
            self._fallback(ForwardKind.UNREACHABLE, failure(Outcome.UNREACHABLE), now, out)
        elif _is_busy(plan.state, acc):
            self._fallback(ForwardKind.BUSY, failure(Outcome.BUSY), now, out)
        else:
            # A no-answer rule without targets (voicemail only) still sets how long the phones ring.
            no_answer = self.rules.get(ForwardKind.NO_ANSWER) or acc.forward(ForwardKind.NO_ANSWER)
            timeout = no_answer.delay_seconds if no_answer is not None else acc.ring_seconds
            self._run("own", plan.ring(_contacts(acc), self.leg, timeout=timeout), now, out)

    def _fallback(self, kind: ForwardKind, otherwise: Result | None, now: float, out: list[Action]) -> None:
        plan, acc = self.plan, self.account
        rule = self.rules.get(kind)
        if rule is not None:
            vm = acc.voicemail and rule.voicemail_last_resort
            child = targets_node(plan, acc, self.leg, rule.targets, _REASONS[kind], rule.show_caller, vm)
            self._run(kind.value, child, now, out)
        elif acc.voicemail:
            self._run("voicemail", plan.voicemail(acc.account_id, self.leg), now, out)
        else:
            self.finish(otherwise or failure(Outcome.UNREACHABLE), now, out)

    def child_done(self, child: Node, result: Result, now: float, out: list[Action]) -> None:
        if child is not self.child or self.done:
            return
        if self.phase == "own" and result.outcome is not Outcome.ANSWERED:
            kind = _FALLBACK_OF.get(result.outcome)
            if kind is not None:
                self._fallback(kind, result, now, out)
                return
            if self.account.voicemail:  # declined (603…) or refused: voicemail takes it
                self._run("voicemail", self.plan.voicemail(self.account.account_id, self.leg), now, out)
                return
        self.finish(result, now, out)

    def cancel(self, out: list[Action]) -> None:
        self.done = True
        if self.child is not None:
            self.child.cancel(out)

    def unlink(self) -> None:
        super().unlink()
        self.child = None  # its parent is this node


def targets_node(
    plan: CallPlan,
    account: AccountRoute,
    leg: _Leg,
    targets: tuple[ForwardTarget, ...],
    reason: DiversionReason,
    show: ShowCaller,
    voicemail_last: bool,
) -> Node:
    """The staggered forward targets of ``account``, with its voicemail as last resort if asked."""
    customer = plan.setup.customers[account.customer_id]
    slots = [
        Slot(
            partial(expand, plan, customer, t.number, leg, account, reason, show),
            t.start_after,
            t.ring_seconds,
        )
        for t in targets
    ]
    last = (lambda: plan.voicemail(account.account_id, leg)) if voicemail_last else None
    return Stagger(plan, slots, last)


def _diverted(
    plan: CallPlan, leg: _Leg, account: AccountRoute, reason: DiversionReason, show: ShowCaller
) -> _Leg:
    step = Diversion(reason, account.presented_number, len(leg.diversions) + 1, account.account_id)
    if show is ShowCaller.ACCOUNT:
        caller_id, display = account.presented_number, account.display_name
    else:
        caller_id, display = plan.caller.number, plan.caller.display
    return _Leg(caller_id, display, (step, *leg.diversions), account.account_id)


def expand(
    plan: CallPlan,
    customer: CustomerRoute,
    number: str,
    leg: _Leg,
    account: AccountRoute | None,
    reason: DiversionReason,
    show: ShowCaller,
) -> Node:
    """A node for a forward/fallback target, read as ``account``'s user (or ``customer``) would dial it."""
    setup = plan.setup
    if account is not None:
        if len(leg.diversions) >= setup.hop_limit:
            return Fixed(plan, failure(Outcome.TOO_MANY_HOPS, f"More than {setup.hop_limit} forwards"))
        leg = _diverted(plan, leg, account, reason, show)
    if number == VOICEMAIL_KEYWORD:
        if account is None:
            return Fixed(plan, failure(Outcome.FAILED, "No mailbox", 404, "Not Found"))
        return plan.voicemail(account.account_id, leg)
    dest = classify(setup, customer, number)
    kind = dest.kind
    if kind is DestinationKind.EXTENSION:
        assert dest.account is not None
        return AccountNode(plan, dest.account, leg)
    if kind is DestinationKind.DID:
        assert dest.did is not None
        return did_node(plan, dest.did, leg)
    if kind is DestinationKind.SHORT_CODE:
        if dest.number == VOICEMAIL_CODE and account is not None:
            return plan.voicemail(account.account_id, leg)
        if dest.number == CONFERENCE_CODE:
            return plan.ring(MediaService(setup.media_uri, "conference", room=customer.customer_id), leg)
        return Fixed(plan, failure(Outcome.FAILED, f"Cannot forward to {number}", 404, "Not Found"))
    if kind is DestinationKind.INVALID:
        warning = f"Forward target {number!r} is not a number"
        return Fixed(plan, failure(Outcome.FAILED, warning, 484, "Address Incomplete"))
    return outside_node(plan, customer, dest.number, leg, account)


def outside_node(
    plan: CallPlan, customer: CustomerRoute, e164: str, leg: _Leg, account: AccountRoute | None
) -> Node:
    """A leg through the trunk, paid by the forwarding account: its blocks and the rater apply."""
    blocked = account.blocklist.blocking_prefix(e164) if account is not None else None
    if blocked is not None:
        warning = (
            f"Destination {e164} is blocked (prefix {blocked}: satellite, premium or operator-blocked range)"
        )
        return Fixed(plan, failure(Outcome.FAILED, warning, 403, "Forbidden"))
    if account is not None and account.block_premium and is_premium(customer.dialing, e164):
        warning = f"Premium-rate numbers are blocked for this account: {e164}"
        return Fixed(plan, failure(Outcome.FAILED, warning, 403, "Forbidden"))
    max_duration = None
    hold = 0
    if account is not None:
        auth = plan.authorise(AuthoriseRequest(account.customer_id, account.account_id, e164))
        if not auth.allowed or (auth.out_of_plan and account.block_out_of_plan):
            warning = auth.warning or f"Forward to {e164} not authorised"
            return Fixed(plan, failure(Outcome.FAILED, warning, auth.status, auth.reason))
        max_duration, hold = auth.max_duration, auth.hold_micros
    target = trunk_number(plan.setup, customer, e164)
    return plan.ring(target, leg, rated=True, max_duration=max_duration, hold_micros=hold)


def did_node(plan: CallPlan, did: Did, leg: _Leg) -> Node:
    customer = plan.setup.customers[did.customer_id]
    kind = did.kind
    if kind is DidKind.ACCOUNT or kind is DidKind.VOICEMAIL:
        account = customer.accounts.get(did.target)
        if account is None:
            return Fixed(plan, failure(Outcome.FAILED, f"DID {did.number}: no account", 404, "Not Found"))
        if kind is DidKind.ACCOUNT:
            return AccountNode(plan, account, leg)
        return plan.voicemail(account.account_id, leg)
    if kind is DidKind.GROUP:
        group = customer.groups.get(did.target)
        if group is None:
            return Fixed(plan, failure(Outcome.FAILED, f"DID {did.number}: no group", 404, "Not Found"))
        return group_node(plan, group, leg)
    if kind is DidKind.CONFERENCE:
        return plan.ring(MediaService(plan.setup.media_uri, "conference", room=did.number), leg)
    status, reason = HANGUP_STATUS
    return Fixed(plan, failure(Outcome.FAILED, f"{did.number} is not taking calls", status, reason))


def _member(plan: CallPlan, customer: CustomerRoute, extension: str, leg: _Leg) -> Node:
    """A group member's phones only (members' own forwarding does not apply to group calls)."""
    account = customer.accounts.get(extension)
    if account is None:
        return Fixed(plan, failure(Outcome.FAILED, f"No extension {extension}", 404, "Not Found"))
    if account.account_id in plan.visited:
        return Fixed(plan, failure(Outcome.LOOP))
    if not plan.state.is_registered(account.account_id):
        return Fixed(plan, failure(Outcome.UNREACHABLE))
    if _is_busy(plan.state, account):
        return Fixed(plan, failure(Outcome.BUSY))
    plan.visited.add(account.account_id)
    return plan.ring(_contacts(account), leg)


def group_node(plan: CallPlan, group: Group, leg: _Leg) -> Node:
    customer = plan.setup.customers[group.customer_id]
    together = group.strategy is GroupStrategy.PARALLEL
    slots = [
        Slot(partial(_member, plan, customer, m.extension, leg), 0 if together else None, m.ring_seconds)
        for m in group.members
    ]
    last = None
    if group.fallback:
        fallback = group.fallback

        def last() -> Node:
            return expand(plan, customer, fallback, leg, None, DiversionReason.NO_ANSWER, ShowCaller.ORIGINAL)

    return Stagger(plan, slots, last)


def plan_incoming(
    setup: RoutingSetup,
    callee: AccountRoute | Did | Group,
    caller: Caller,
    state: CallState,
    authorise: Authoriser = allow_all,
) -> CallPlan:
    """The plan for a call to an account (internal call), a DID (inbound or on-net) or a group."""
    return CallPlan(setup, callee, caller, state, authorise)


def plan_did(
    setup: RoutingSetup, number: str, caller: Caller, state: CallState, authorise: Authoriser = allow_all
) -> CallPlan | None:
    """The plan for an inbound call to E.164 ``number``; None if it is not one of our DIDs (404)."""
    did = setup.dids.get(number)
    return None if did is None else CallPlan(setup, did, caller, state, authorise)
