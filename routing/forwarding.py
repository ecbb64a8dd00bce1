"""The forwarding rules in force: configured rules with the phone's feature-code overrides on top."""

from __future__ import annotations

from dataclasses import replace

from routing.model import AccountRoute, ForwardKind, ForwardRule, ForwardTarget
from routing.state import Overrides

DEFAULT_RING_SECONDS = 20


def effective_forwards(account: AccountRoute, overrides: Overrides) -> dict[ForwardKind, ForwardRule]:
    """Per kind, the rule to apply. An override set from the phone replaces the configured targets
    (keeping the rule's caller-number choice and delay); one cleared from the phone disables it."""
    rules = {rule.kind: rule for rule in account.forwards if rule.targets}
    mine = overrides.get(account.account_id)
    if not mine:
        return rules
    for kind, target in mine.items():
        base = rules.get(kind)
        if target is None:
            rules.pop(kind, None)
        elif base is None:
            rules[kind] = ForwardRule(kind, (ForwardTarget(target, DEFAULT_RING_SECONDS),))
        else:
            ring = base.targets[0].ring_seconds
            rules[kind] = replace(base, targets=(ForwardTarget(target, ring),))
    return rules
