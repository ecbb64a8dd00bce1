"""What a ringing branch's final answers mean for the plan: SIP status codes -> branch outcome.

A plan branch may have several forked sub-branches (every registered contact of an account); the
plan hears one outcome once they have all answered. The mapping is a routing decision (what counts
as busy, as no answer, as unreachable), not a protocol one, so it lives here beside the plans.
"""

from __future__ import annotations

from collections.abc import Sequence

from routing.plan_events import BranchBusy, BranchEvent, BranchFailed, BranchNotAnswered, BranchUnreachable

BUSY = frozenset({486, 600})
UNREACHABLE = frozenset({408, 503})


def branch_outcome(
    finals: Sequence[tuple[int, str]], provisional: bool
) -> BranchBusy | BranchNotAnswered | BranchUnreachable | BranchFailed | None:
    """The outcome of a plan branch whose sub-branches all ended without a 2xx.

    ``finals``: (status, reason) of each sub-branch (408 for a time-out, 503 for a transport error);
    ``provisional``: some sub-branch had answered 1xx. None when every sub-branch was cancelled by us
    (487 all round): the plan has moved on already."""
    codes = [status for status, _ in finals]
    if any(c in BUSY for c in codes):
        return BranchBusy()
    if all(c == 487 for c in codes):
        return None
    if any(c == 480 for c in codes) or (provisional and any(c == 408 for c in codes)):
        return BranchNotAnswered()
    if all(c in UNREACHABLE for c in codes):
        return BranchUnreachable()
    best = min(codes)
    reason = next((r for status, r in finals if status == best and r), "")
    return BranchFailed(best or 500, reason)


def failure_for(event: BranchEvent) -> tuple[int, str, str]:
    """The caller's final answer (status, reason, warning) when a single-target call's branch ends."""
    if isinstance(event, BranchBusy):
        return 486, "Busy Here", ""
    if isinstance(event, BranchNotAnswered):
        return 480, "Temporarily Unavailable", ""
    if isinstance(event, BranchUnreachable):
        return 480, "Temporarily Unavailable", "destination unreachable"
    if isinstance(event, BranchFailed):
        return event.status, event.reason or "Call Failed", ""
    return 500, "Call Failed", ""
