"""A plan with a single target (a trunk number, the media service, a fixed URI), with the interface
of ``CallPlan`` so the call controller drives every call alike."""

from __future__ import annotations

from routing.outcomes import failure_for
from routing.plan_events import (
    Action,
    BranchAnswered,
    BranchEvent,
    CancelBranch,
    ConnectBranch,
    FailCall,
    RingBranch,
)


class DirectPlan:
    def __init__(self, ring: RingBranch) -> None:
        self.ring = ring
        self.finished = False

    def start(self, now: float) -> list[Action]:
        return [self.ring]

    def branch(self, branch_id: int) -> RingBranch:
        return self.ring

    def on_branch_event(self, branch_id: int, event: BranchEvent, now: float) -> list[Action]:
        self.finished = True
        if isinstance(event, BranchAnswered):
            return [ConnectBranch(branch_id)]
        status, reason, warning = failure_for(event)
        return [FailCall(status, reason, warning)]

    def on_timer(self, now: float) -> list[Action]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def cancel(self) -> list[Action]:
        self.finished = True
        return [CancelBranch(self.ring.branch_id)]

    def dispose(self) -> None:
        """Nothing to free (CallPlan's interface)."""
