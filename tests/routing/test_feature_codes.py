"""Feature codes set and clear forwarding; the change persists and routing honours it."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing import (
    Caller,
    CallState,
    DecisionKind,
    FeatureCode,
    ForwardingChange,
    ForwardKind,
    ForwardRule,
    ForwardTarget,
    JsonForwardingStore,
    MemoryForwardingStore,
    RefusalCause,
    ShowCaller,
    plan_incoming,
    route_outgoing,
)

from .helpers import Driver, account, platform


@pytest.mark.parametrize(
    ("dialed", "kind", "target"),
    [
        ("*21*0612345678#", ForwardKind.PERMANENT, "+33612345678"),
        ("*61*2003#", ForwardKind.NO_ANSWER, "2003"),
        ("*67*+442079460000#", ForwardKind.BUSY, "+442079460000"),
        ("*62*0033612345678#", ForwardKind.UNREACHABLE, "+33612345678"),
        ("#21#", ForwardKind.PERMANENT, None),
        ("#61#", ForwardKind.NO_ANSWER, None),
        ("#67#", ForwardKind.BUSY, None),
        ("#62#", ForwardKind.UNREACHABLE, None),
    ],
)
def test_default_codes(dialed: str, kind: ForwardKind, target: str | None) -> None:
    setup = platform()
    d = route_outgoing(setup, setup.accounts["acme-2002"], dialed, CallState())
    assert d.kind is DecisionKind.FEATURE
    assert d.change == ForwardingChange("acme-2002", kind, target)


@pytest.mark.parametrize("dialed", ["*21*#", "*21*12#", "*99*0612345678#", "*21*2002#", "*21*2222#", "#99#"])
def test_bad_codes_are_refused_with_a_reason(dialed: str) -> None:
    setup = platform()
    d = route_outgoing(setup, setup.accounts["acme-2002"], dialed, CallState())
    assert d.kind is DecisionKind.REFUSED
    assert d.refusal.cause is RefusalCause.BAD_FEATURE_CODE
    assert d.refusal.status == 484
    assert dialed in d.refusal.warning


def test_table_is_configurable() -> None:
    from dataclasses import replace

    setup = replace(platform(), feature_codes=(FeatureCode(ForwardKind.PERMANENT, "*72", "*73"),))
    alice = setup.accounts["acme-2001"]
    assert route_outgoing(setup, alice, "*720612345678#", CallState()).change.target == "+33612345678"
    assert route_outgoing(setup, alice, "*73", CallState()).change.target is None
    assert route_outgoing(setup, alice, "#21#", CallState()).kind is DecisionKind.REFUSED


def _ring_labels(setup, store, ext: str = "2002") -> set[str]:
    plan = plan_incoming(
        setup,
        setup.customers["acme"].accounts[ext],
        Caller("+33612000000"),
        CallState(overrides=store.snapshot()),
    )
    d = Driver(plan)
    d.start(0)
    return d.ringing_labels()


def test_set_from_phone_then_routing_uses_it_then_clear() -> None:
    setup = platform()
    store = MemoryForwardingStore()
    bob = setup.accounts["acme-2002"]
    assert _ring_labels(setup, store) == {"2002"}
    store.apply(route_outgoing(setup, bob, "*21*2003#", CallState()).change)
    assert _ring_labels(setup, store) == {"2003"}
    store.apply(route_outgoing(setup, bob, "#21#", CallState()).change)
    assert _ring_labels(setup, store) == {"2002"}


def test_clearing_from_phone_disables_a_configured_rule() -> None:
    fwd = ForwardRule(ForwardKind.PERMANENT, (ForwardTarget("2003"),))
    setup = platform(account("2002", forwards=(fwd,)), account("2003"))
    store = MemoryForwardingStore()
    assert _ring_labels(setup, store) == {"2003"}
    store.apply(ForwardingChange("acme-2002", ForwardKind.PERMANENT, None))
    assert _ring_labels(setup, store) == {"2002"}


def test_override_keeps_the_configured_caller_choice() -> None:
    fwd = ForwardRule(ForwardKind.PERMANENT, (ForwardTarget("2003", 25),), show_caller=ShowCaller.ACCOUNT)
    setup = platform(account("2002", forwards=(fwd,)), account("2003"))
    store = MemoryForwardingStore()
    store.apply(ForwardingChange("acme-2002", ForwardKind.PERMANENT, "+33612345678"))
    plan = plan_incoming(
        setup, setup.accounts["acme-2002"], Caller("+33611111111"), CallState(overrides=store.snapshot())
    )
    [ring] = plan.start(0)
    assert ring.target.number == "+33612345678"
    assert ring.caller_id == "+33140002002"


def test_persists_across_restart(tmp_path: Path) -> None:
    setup = platform()
    bob = setup.accounts["acme-2002"]
    store = JsonForwardingStore.in_state_dir(tmp_path / "state")
    store.apply(route_outgoing(setup, bob, "*21*0612345678#", CallState()).change)
    store.apply(route_outgoing(setup, bob, "#67#", CallState()).change)

    reopened = JsonForwardingStore.in_state_dir(tmp_path / "state")  # the "restart"
    assert dict(reopened.snapshot()["acme-2002"]) == {
        ForwardKind.PERMANENT: "+33612345678",
        ForwardKind.BUSY: None,
    }
    assert _ring_labels(setup, reopened) == {"+33612345678"}
