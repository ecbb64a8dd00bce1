"""The pure parts: contact matching keys, the msgpack codec, request validation, pure planning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registrar.location import (
    Binding,
    BindingAdded,
    ContactChange,
    Flow,
    InvalidChangesError,
    RegisterChanges,
    canonical_uri,
    contact_key,
    plan_flow_closed,
    plan_register,
)
from registrar.location.codec import decode, encode

UDP = Flow("udp", "198.51.100.7", 5060, "203.0.113.5:5060")
T0 = 1_700_000_000.0


def test_canonical_uri_rules() -> None:
    assert canonical_uri("SIP:Alice@Example.COM;Transport=TCP;lr") == canonical_uri(
        "sip:Alice@example.com;lr;transport=tcp"
    )
    assert canonical_uri("<sip:a@h>") == canonical_uri("sip:a@h")
    assert canonical_uri("sip:alice@h") != canonical_uri("sip:Alice@h")  # user part is case-sensitive
    assert canonical_uri("sip:a@h") != canonical_uri("sip:a@h:5060")  # a default port is not implied
    assert canonical_uri("sip:a@h;line=1") != canonical_uri("sip:a@h;line=2")
    assert canonical_uri("sip:a@h?X=1") != canonical_uri("sip:a@h?X=2")


def test_contact_key_prefers_outbound_then_instance() -> None:
    assert contact_key("sip:a@h", "<urn:1>", 1) == contact_key("sip:b@k", "<urn:1>", 1)
    assert contact_key("sip:a@h", "<urn:1>", 1) != contact_key("sip:a@h", "<urn:1>", 2)
    assert contact_key("sip:a@h", "<urn:1>") == contact_key("sip:b@k", "<urn:1>")
    assert contact_key("sip:a@h") != contact_key("sip:a@h", "<urn:1>")


bindings = st.builds(
    Binding,
    aor=st.just("sip:1001@acme.example"),
    contact=st.text(min_size=1),
    expires_at=st.floats(min_value=0, max_value=4e9),
    q=st.integers(0, 1000),
    call_id=st.text(),
    cseq=st.integers(0, 2**31 - 1),
    flow=st.builds(
        Flow,
        st.sampled_from(["udp", "tcp"]),
        st.ip_addresses().map(str),
        st.integers(1, 65535),
        st.just("203.0.113.5:5060"),
        st.none() | st.text(min_size=1),
    ),
    registered_at=st.floats(min_value=0, max_value=4e9),
    instance=st.none() | st.text(),
    reg_id=st.none() | st.integers(1, 1000),
    user_agent=st.text(),
    path=st.lists(st.text(), max_size=3).map(tuple),
    received=st.none() | st.text(),
    flow_alive=st.booleans(),
)


@given(bindings)
def test_codec_round_trips_every_field(b: Binding) -> None:
    assert decode(b.aor, encode(b)) == b


def test_codec_refuses_an_unknown_format() -> None:
    import msgpack

    with pytest.raises(ValueError):
        decode("sip:a@x", msgpack.packb((99, "x")))


def test_request_validation_carries_400() -> None:
    with pytest.raises(InvalidChangesError) as err:
        RegisterChanges("c", 1, UDP, (ContactChange("sip:a@h", 60),), wildcard=True)
    assert err.value.status == 400
    with pytest.raises(InvalidChangesError):
        ContactChange("sip:a@h", 60, q=1001)
    with pytest.raises(InvalidChangesError):
        ContactChange("sip:a@h", -1)


def test_plan_is_pure_and_leaves_its_input_alone() -> None:
    current: tuple[Binding, ...] = ()
    ch = RegisterChanges("c", 1, UDP, (ContactChange("sip:a@h", 60), ContactChange("sip:b@h", 60, q=10)))
    result = plan_register("sip:x@y", current, ch, T0)
    assert [type(e) for e in result.events] == [BindingAdded, BindingAdded]
    assert [b.contact for b in result.bindings] == ["sip:a@h", "sip:b@h"]
    again = plan_register(
        "sip:x@y", result.bindings, RegisterChanges("c", 2, UDP, (ContactChange("sip:a@h", 0),)), T0
    )
    assert len(result.bindings) == 2 and [b.contact for b in again.bindings] == ["sip:b@h"]


def test_plan_flow_closed_ignores_other_connections_and_dead_flows() -> None:
    tcp = Flow("tcp", "198.51.100.8", 4000, "203.0.113.5:5070", "h/1")
    ch = RegisterChanges("c", 1, tcp, (ContactChange("sip:a@h", 60),))
    [b] = plan_register("sip:x@y", (), ch, T0).bindings
    kept, events = plan_flow_closed((b,), "h/2")
    assert kept == (b,) and events == ()
    kept, events = plan_flow_closed((b,), "h/1")
    assert not kept[0].flow_alive and len(events) == 1
    assert plan_flow_closed(kept, "h/1") == (kept, ())


def test_one_register_listing_a_contact_twice_makes_one_binding() -> None:
    ch = RegisterChanges(
        "c",
        1,
        UDP,
        (ContactChange("sip:a@H;x=1", 60), ContactChange("sip:a@h;X=1", 90), ContactChange("sip:b@h", 60)),
    )
    result = plan_register("sip:x@y", (), ch, T0)
    assert [type(e) for e in result.events] == [BindingAdded, BindingAdded]
    assert [(b.contact, b.expires_at) for b in result.bindings] == [
        ("sip:a@h;X=1", T0 + 90),
        ("sip:b@h", T0 + 60),
    ]
    added_then_removed = RegisterChanges(
        "c", 1, UDP, (ContactChange("sip:a@h", 60), ContactChange("sip:A@h", 0))
    )
    assert len(plan_register("sip:x@y", (), added_then_removed, T0).bindings) == 1  # user part differs
    gone = RegisterChanges("c", 1, UDP, (ContactChange("sip:a@h", 60), ContactChange("sip:a@H", 0)))
    assert plan_register("sip:x@y", (), gone, T0) == plan_register("sip:x@y", (), gone, T0)
    assert plan_register("sip:x@y", (), gone, T0).bindings == ()


_contacts = st.sampled_from(
    ["sip:1001@198.51.100.7:5060", "sip:1001@198.51.100.7:5062", "SIP:1001@198.51.100.7:5060"]
)


@given(
    old=st.none()
    | st.builds(
        lambda contact, expires_at, call_id, cseq, instance, reg_id: Binding(
            "sip:1001@acme.example", contact, expires_at, 1000, call_id, cseq, UDP, T0 - 100, instance, reg_id
        ),
        _contacts,
        st.sampled_from([T0 - 1, T0 + 60]),
        st.sampled_from(["c1", "c2"]),
        st.integers(1, 3),
        st.sampled_from([None, "<urn:uuid:1>"]),
        st.sampled_from([None, 1]),
    ),
    contact=_contacts,
    expires=st.sampled_from([0, 60, 3600]),
    q=st.integers(0, 1000),
    call_id=st.sampled_from(["c1", "c2"]),
    cseq=st.integers(1, 3),
    instance=st.sampled_from([None, "<urn:uuid:1>"]),
    reg_id=st.sampled_from([None, 1]),
    max_contacts=st.sampled_from([None, 0, 1, 5]),
)
def test_the_one_contact_fast_path_plans_like_the_general_walk(
    old, contact, expires, q, call_id, cseq, instance, reg_id, max_contacts
) -> None:  # type: ignore[no-untyped-def]
    from registrar.location import LocationError, OverflowPolicy
    from registrar.location.rules import _plan_general

    current = (old,) if old is not None else ()
    ch = RegisterChanges(
        call_id, cseq, UDP, (ContactChange(contact, expires, q, instance, reg_id),), user_agent="ua"
    )

    def outcome(fn):  # type: ignore[no-untyped-def]
        try:
            return fn()
        except LocationError as exc:
            return (type(exc).__name__, str(exc))

    live = [b for b in current if b.expires_at > T0]
    for policy in OverflowPolicy:
        fast = outcome(lambda: plan_register("sip:1001@acme.example", current, ch, T0, max_contacts, policy))  # noqa: B023
        general = outcome(lambda: _plan_general("sip:1001@acme.example", live, ch, T0, max_contacts, policy))  # noqa: B023
        assert fast == general
