"""Calls across hosts in memory (calls.cluster_route, tests/calls/sim.py): this proxy is host A; a peer
host sends it requests routed to the route entry A stored with a phone's binding. From a peer, they are
relayed over the phone's flow without authentication and without a call of A's own (no CDR, nothing
counted); from anyone else, or with a token that does not open, they are challenged as usual. The wire
test with three real hosts is tests/server/test_cluster_hosts.py."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

import pytest

from calls.actions import PeerSilent
from calls.cluster_route import ClusterRoute
from calls.model import Contact, Destination
from server.proxy_service import _contact
from sipcore.flow import Flow
from sipcore.message import Request, parse
from tests.calls.sim import DOMAIN, PROXY, Party, Sim

PEER = ("192.0.2.9", 5060)  # host B
KEY = b"sim-flow-key"


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    sim = Sim(tmp_path)
    cluster = ClusterRoute(PROXY[0], PROXY[1], "udp", ("192.0.2.9/32",), KEY)
    sim.settings = replace(sim.settings, cluster=cluster)
    sim.controller.update(sim.settings)
    return sim


def _phone(sim: Sim) -> Party:
    party = Party(sim, "1001", ("203.0.113.7", 40000))
    party.contact_host = ("192.168.1.10", 5060)  # behind NAT: only its flow reaches it
    return party


def _entry(sim: Sim, phone: Party) -> str:
    cluster = sim.settings.cluster
    assert cluster is not None
    return cluster.entry(Flow("udp", phone.addr, PROXY))


def _invite(sender: Party, phone: Party, route: str, call_id: str | None = None, tag: str | None = None,
            branch: str = "") -> tuple[str, str]:  # fmt: skip
    """The INVITE host B forwards to our phone: Request-URI its Contact, Route our entry."""
    call_id = call_id or secrets.token_hex(6)
    tag = tag or "b" + secrets.token_hex(3)
    host, port = phone.contact_host or phone.addr
    text = (
        f"INVITE sip:1001@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sender.addr[0]}:{sender.addr[1]};branch=z9hG4bK{call_id}{branch}\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.4:5060;branch=z9hG4bKcaller{call_id}\r\n"
        f"Route: {route}\r\nRecord-Route: <sip:{sender.addr[0]}:{sender.addr[1]};lr>\r\nMax-Forwards: 69\r\n"
        f"From: <sip:1002@{DOMAIN}>;tag={tag}\r\nTo: <sip:1001@{DOMAIN}>\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 2 INVITE\r\nContact: <sip:1002@198.51.100.4:5060>\r\nContent-Length: 0\r\n\r\n"
    )
    sender.send(parse(text.encode()))
    return call_id, tag


def _at(sim: Sim, party: Party, method: str) -> list[Request]:
    return [m for to, _, m in sim.log if to == party.addr and isinstance(m, Request) and m.method == method]


def test_a_peers_invite_is_relayed_over_the_phones_flow_without_a_call_here(sim: Sim) -> None:
    phone, peer = _phone(sim), Party(sim, "host-b", PEER, mode="silent")
    call_id, tag = _invite(peer, phone, _entry(sim, phone))
    sim.run()
    (invite,) = _at(sim, phone, "INVITE")
    assert invite.uri == "sip:1001@192.168.1.10:5060"  # the Contact, sent to the flow
    assert "route" not in invite.headers  # our entry is gone
    rr = invite.headers.get_all("record-route")
    assert rr[0].startswith("<sip:") and f"@{PROXY[0]}:{PROXY[1]};lr>" in rr[0]  # our token entry
    assert [r.status for r in peer.responses(call_id)] == [180, 200]
    assert not sim.controller.calls and not sim.ended  # no call, no CDR on the transit host
    assert not sim.controller._transits  # forgotten at the final answer

    # the caller's BYE comes back through B with our Record-Route entry: over the flow again
    ok = peer.responses(call_id)[-1]
    routes = [r for r in rr if PROXY[0] in r]  # as the phone's 200 carries them to the caller
    bye = (
        f"BYE sip:1001@192.168.1.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch=z9hG4bKbye{call_id}\r\n"
        f"Route: {routes[0]}\r\nMax-Forwards: 69\r\nFrom: <sip:1002@{DOMAIN}>;tag={tag}\r\n"
        f"To: {ok.headers.get('to')}\r\nCall-ID: {call_id}\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    peer.send(parse(bye.encode()))
    sim.run()
    assert len(_at(sim, phone, "BYE")) == 1
    assert [r.status for r in peer.responses(call_id) if r.cseq[1] == "BYE"] == [200]
    assert not sim.ended


def test_the_peers_cancel_reaches_the_phone_through_us(sim: Sim) -> None:
    phone, peer = _phone(sim), Party(sim, "host-b", PEER, mode="silent")
    phone.mode = "ring"
    call_id, tag = _invite(peer, phone, _entry(sim, phone))
    sim.run()
    cancel = (
        f"CANCEL sip:1001@192.168.1.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch=z9hG4bK{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:1002@{DOMAIN}>;tag={tag}\r\nTo: <sip:1001@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n"
    )
    peer.send(parse(cancel.encode()))
    sim.run()
    assert len(_at(sim, phone, "CANCEL")) == 1
    statuses = [(r.cseq[1], r.status) for r in peer.responses(call_id)]
    assert ("CANCEL", 200) in statuses and ("INVITE", 487) in statuses
    assert not sim.controller._transits and not sim.ended


def test_anyone_else_or_a_bad_token_is_challenged(sim: Sim) -> None:
    phone = _phone(sim)
    stranger = Party(sim, "x", ("198.51.100.66", 5060), mode="silent")
    call_id, _ = _invite(stranger, phone, _entry(sim, phone))
    sim.run()
    assert [r.status for r in stranger.responses(call_id)] == [407]
    peer = Party(sim, "host-b", PEER, mode="silent")
    forged = _entry(sim, phone).replace("<sip:", "<sip:AAAA", 1)
    call_id, _ = _invite(peer, phone, forged)
    sim.run()
    assert [r.status for r in peer.responses(call_id)] == [407]
    assert not _at(sim, phone, "INVITE")


def test_a_peers_invite_is_never_answered_statelessly(sim: Sim) -> None:
    phone, peer = _phone(sim), Party(sim, "host-b", PEER, mode="silent")
    flow = Flow("udp", PEER, PROXY)
    for route, stateless in ((_entry(sim, phone), False), (f"<sip:{PROXY[0]}:{PROXY[1]};lr>", True)):
        text = (
            f"INVITE sip:1001@192.168.1.10 SIP/2.0\r\nVia: SIP/2.0/UDP {PEER[0]};branch=z9hG4bK1\r\n"
            f"Route: {route}\r\nFrom: <sip:1002@{DOMAIN}>;tag=a\r\nTo: <sip:1001@{DOMAIN}>\r\n"
            "Call-ID: s1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        req = parse(text.encode())
        assert isinstance(req, Request)
        assert sim.controller.is_stateless_invite(req, flow) is stateless
    del peer


class _Binding:
    def __init__(self, path: tuple[str, ...]) -> None:
        from registrar.location.binding import Flow as LocFlow

        self.contact = "<sip:1001@192.168.1.10:5060>"
        self.flow = LocFlow("udp", "203.0.113.7", 40000, f"{PROXY[0]}:{PROXY[1]}")
        self.flow_alive = True
        self.path = path


def test_the_host_holding_the_flow_drops_its_own_entry_others_route_through_it() -> None:
    here = ClusterRoute("192.0.2.1", 5060, "udp", (), KEY)
    there = ClusterRoute("192.0.2.9", 5060, "udp", (), KEY)
    flow = Flow("udp", ("203.0.113.7", 40000), ("192.0.2.1", 5060))
    edge = "<sip:sbc.example.net;lr>"
    binding = _Binding((here.entry(flow), edge))
    mine = _contact(binding, here)
    assert mine.route == (edge,) and mine.dest == Destination("udp", "sbc.example.net", 5060)
    alone = _contact(_Binding((here.entry(flow),)), here)
    assert alone.route == () and alone.dest.flow == flow  # straight over the phone's flow
    theirs = _contact(binding, there)
    assert theirs.route == binding.path and theirs.dest == Destination("udp", "192.0.2.1", 5060)
    assert _contact(_Binding(()), None).route == ()  # one host: bindings carry no entry at all
    uri_flow = there.own_flow  # a token opens only at the host it names
    from sipcore.headers import NameAddr

    uri = NameAddr.parse(here.entry(flow)).uri
    assert here.own_flow(uri) == flow and uri_flow(uri) is None  # type: ignore[arg-type]


def test_a_fork_to_two_phones_behind_us_relays_both_branches(sim: Sim) -> None:
    """Host B forks one call to two contacts registered through us: same Call-ID, two branches."""
    desk, mobile = _phone(sim), Party(sim, "1001", ("203.0.113.8", 40002), mode="ring")
    mobile.contact_host = ("192.168.1.11", 5060)
    peer = Party(sim, "host-b", PEER, mode="silent")
    desk.mode = "ring"
    call_id, tag = _invite(peer, desk, _entry(sim, desk), branch="a")
    _invite(peer, mobile, _entry(sim, mobile), call_id, tag, branch="b")
    sim.run()
    assert len(_at(sim, desk, "INVITE")) == 1 and len(_at(sim, mobile, "INVITE")) == 1
    assert len(sim.controller._transits) == 2 and not sim.controller.calls


def test_a_binding_is_stored_with_our_entry_on_top_of_its_path() -> None:
    """What the registrar service stores with server.cluster; the 200's Path (``Apply.path``) is the
    request's own."""
    from registrar.location import OverflowPolicy
    from registrar.location.binding import Flow as LocFlow
    from registrar.location.changes import RegisterChanges
    from registrar.registrar import Apply
    from server.registrar_service import _through_here

    here = ClusterRoute("192.0.2.1", 5060, "tcp", (), KEY)
    loc = LocFlow("tcp", "203.0.113.7", 40000, "192.0.2.1:5060", "host/42/w1-tcp-7")
    edge = ("<sip:sbc.example.net;lr>",)
    d = Apply("sip:1001@demo.sim", None, RegisterChanges("c", 1, loc, path=edge), 5, OverflowPolicy.DROP_OLDEST,
              path=edge)  # type: ignore[arg-type]  # fmt: skip
    stored = _through_here(here, d, d.changes)  # type: ignore[arg-type]
    assert stored.path == edge and stored.changes is not None
    top, *rest = stored.changes.path
    assert tuple(rest) == edge and top.endswith("@192.0.2.1:5060;transport=tcp;lr>")
    from sipcore.headers import NameAddr

    flow = here.own_flow(NameAddr.parse(top).uri)  # type: ignore[arg-type]
    assert flow == Flow("tcp", ("203.0.113.7", 40000), ("192.0.2.1", 5060), "w1-tcp-7")


def _registered_through_host_a(sim: Sim, mode: str) -> tuple[Party, Party, Party]:
    """This proxy is host B of a cluster; 1007 is registered through host A (a party answering as
    ``mode``) and forwarded to 1005 when unreachable; 1001 calls. Returns (host A, 1005, 1001)."""
    host_a = ("192.0.2.9", 5060)
    sim.settings = replace(
        sim.settings, cluster=ClusterRoute(PROXY[0], PROXY[1], "udp", ("192.0.2.9/32",), KEY)
    )
    sim.controller.update(sim.settings)
    host = Party(sim, "host-a", host_a, mode=mode)  # as a proxy, A would send 100
    entry = ClusterRoute(*host_a, "udp", (), KEY).entry(Flow("udp", ("203.0.113.7", 40000), host_a))
    sim.contacts[f"sip:1007@{DOMAIN}"] = [
        Contact("sip:1007@192.168.1.10:5060", Destination("udp", *host_a), (entry,))
    ]
    target = Party(sim, "1005", ("10.0.5.1", 5060))
    sim.register(target)
    caller = Party(sim, "1001", ("10.0.1.1", 5060))
    sim.register(caller)
    return host, target, caller


@pytest.mark.parametrize("alive", [False, True])
def test_a_branch_through_a_dead_host_ends_after_answer_wait(tmp_path: Path, alive: bool) -> None:
    """This proxy is host B; 1007 (forwarded to 1005 when unreachable) is registered through host A.
    A silent A is given up after ``answer_wait`` (the call goes on as unreachable, not after Timer B);
    an A that answers is not."""
    sim = Sim(tmp_path)
    _, target, caller = _registered_through_host_a(sim, "ring" if alive else "silent")
    dlg = caller.call("1007")
    sim.advance(3.9)
    assert not target.requests("INVITE")
    sim.advance(0.2)
    if alive:
        assert not target.requests("INVITE") and dlg.call_id in sim.controller.calls
        return
    invite = target.requests("INVITE")
    assert len(invite) == 1 and "reason=unavailable" in (invite[0].headers.get("diversion") or "")


def test_a_host_found_dead_is_not_rung_through_until_it_is_up_again(tmp_path: Path) -> None:
    """This proxy is host B. The first call to 1007 (registered through host A, silent) waits
    ``answer_wait`` and says so (``PeerSilent``, which the adapter turns into A marked down); with A
    down (``on_peer_state``, the probes' word) the next call takes 1007's unreachable route (1005) at
    once, no INVITE towards A; with A up again, A is rung again."""
    sim = Sim(tmp_path)
    host, target, caller = _registered_through_host_a(sim, "silent")
    caller.call("1007")
    sim.advance(4.1)
    silent = [a for a in sim.performed if isinstance(a, PeerSilent)]
    assert silent == [PeerSilent("192.0.2.9:5060")] and len(target.requests("INVITE")) == 1
    sim.controller.on_peer_state("192.0.2.9:5060", False)
    second = caller.call("1007")
    sim.advance(0.01)  # no answer_wait: at once
    invites = target.requests("INVITE")
    assert len(invites) == 2 and invites[-1].call_id == second.call_id
    assert "reason=unavailable" in (invites[-1].headers.get("diversion") or "")
    assert all(r.call_id != second.call_id for r in host.requests("INVITE"))  # nothing to the dead host
    sim.controller.on_peer_state("192.0.2.9:5060", True)
    other = Party(sim, "1002", ("10.0.2.1", 5060))  # 1001 is in two calls: its limit
    sim.register(other)
    third = other.call("1007")
    sim.advance(0.01)
    assert any(r.call_id == third.call_id for r in host.requests("INVITE"))
    assert len(target.requests("INVITE")) == 2
