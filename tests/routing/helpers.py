"""A small platform for routing tests, and a driver that plays the proxy's part."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from routing import (
    AccountRoute,
    CallPlan,
    CustomerRoute,
    DialingRules,
    Did,
    DidKind,
    Group,
    GroupMember,
    RoutingSetup,
    Trunk,
)
from routing.plan_events import (
    Action,
    BranchAnswered,
    BranchBusy,
    BranchFailed,
    BranchNotAnswered,
    BranchUnreachable,
    CancelBranch,
    RingBranch,
)
from routing.targets import AccountContacts, MediaService, TrunkNumber

MEDIA = "sip:media@10.0.0.9:5080"
FR = DialingRules(country_code=33, national_prefix="0", international_prefix="00")
# what a ringing branch can come to (the plans' tests draw from them)
BRANCH_EVENTS = (
    BranchAnswered(),
    BranchBusy(),
    BranchNotAnswered(),
    BranchUnreachable(),
    BranchFailed(603, "Decline"),
)


def account(ext: str, **kw: Any) -> AccountRoute:
    base = AccountRoute(
        account_id=f"acme-{ext}",
        customer_id="acme",
        extension=ext,
        sip_username=f"u{ext}",
        outgoing_number=f"+3314000{ext}",
        display_name=f"User {ext}",
    )
    return replace(base, **kw)


def platform(*accounts: AccountRoute, dialing: DialingRules = FR, groups=(), hop_limit: int = 5):
    """Customer acme (France) with the given accounts, its DIDs, and customer globex next door."""
    accs = accounts or (account("2001"), account("2002"), account("2003"))
    exts = {a.extension for a in accs}
    dids = [Did(f"+3314000{a.extension}", "acme", DidKind.ACCOUNT, a.extension) for a in accs]
    dids += [
        Did("+33140009010", "acme", DidKind.GROUP, "sales"),
        Did("+33140009020", "acme", DidKind.VOICEMAIL, sorted(exts)[0]),
        Did("+33140009030", "acme", DidKind.HANGUP),
        Did("+33140009040", "acme", DidKind.CONFERENCE),
    ]
    if not groups and {"2002", "2003"} <= exts:
        groups = (Group("sales", "acme", (GroupMember("2002", 15), GroupMember("2003", 10))),)
    acme = CustomerRoute.build("acme", dialing, accs, dids=dids, groups=groups, domains=["acme.example"])
    globex_acc = AccountRoute("globex-3001", "globex", "3001", "g3001", outgoing_number="+33150003001")
    globex = CustomerRoute.build(
        "globex",
        FR,
        [globex_acc],
        dids=[Did("+33150003001", "globex", DidKind.ACCOUNT, "3001")],
        domains=["globex.example"],
    )
    return RoutingSetup.build(
        [acme, globex],
        trunk=Trunk("carrier"),
        support="+33150003001",
        media_uri=MEDIA,
        hop_limit=hop_limit,
    )


class Driver:
    """Plays the proxy: keeps the actions, knows which branches are ringing."""

    def __init__(self, plan: CallPlan) -> None:
        self.plan = plan
        self.log: list[Action] = []
        self.ringing: dict[int, RingBranch] = {}

    def _take(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            self.log.append(action)
            if isinstance(action, RingBranch):
                self.ringing[action.branch_id] = action
            elif isinstance(action, CancelBranch):
                self.ringing.pop(action.branch_id)
        return actions

    def start(self, now: float = 0.0) -> list[Action]:
        return self._take(self.plan.start(now))

    def event(self, branch_id: int, event: Any, now: float) -> list[Action]:
        self.ringing.pop(branch_id, None)
        return self._take(self.plan.on_branch_event(branch_id, event, now))

    def cancel(self) -> list[Action]:
        """The caller gave up."""
        return self._take(self.plan.cancel())

    def advance(self, now: float) -> list[Action]:
        """Fire every deadline up to ``now``, as the proxy's single timer would."""
        out: list[Action] = []
        for _ in range(100):
            deadline = self.plan.next_deadline()
            if deadline is None or deadline > now:
                break
            out += self._take(self.plan.on_timer(deadline))
        return out

    def branch_to(self, what: str) -> int:
        """The ringing branch whose target is ``what`` (an extension, E.164, or 'voicemail:<acc>')."""
        found = [b for b, ring in self.ringing.items() if label(ring) == what]
        assert len(found) == 1, (what, [label(r) for r in self.ringing.values()])
        return found[0]

    def ringing_labels(self) -> set[str]:
        return {label(r) for r in self.ringing.values()}


def label(ring: RingBranch) -> str:
    target = ring.target
    if isinstance(target, AccountContacts):
        return target.extension
    if isinstance(target, TrunkNumber):
        return target.number
    if isinstance(target, MediaService):
        return f"{target.service}:{target.mailbox or target.room}"
    return target.uri
