"""The trunk monitor (calls.trunk_monitor), pure: OPTIONS probes take a trunk out of rotation after
``probe_failures`` failures in a row and bring it back at the first answer; outbound registration
answers the carrier's challenge with a correct digest, refreshes before expiry and backs off on
failure. The clock is the test's."""

from __future__ import annotations

from itertools import count

from calls.actions import SendRequest
from calls.model import Destination
from calls.trunk_monitor import (
    Probe,
    Registering,
    Registration,
    RegistrationState,
    TrunkLink,
    TrunkMonitor,
    TrunkState,
)
from sipcore.digest import compute_response, parse_authorization
from sipcore.message import Request, Response, parse
from sipcore.proxy import Hop

DEST = Destination("udp", "192.0.2.2", 5060)


def _monitor(links: list[TrunkLink], register: bool = True) -> tuple[TrunkMonitor, list]:  # type: ignore[type-arg]
    ids = count()
    monitor = TrunkMonitor(lambda dest: Hop("UDP", "192.0.2.1", 5060), lambda: f"id{next(ids):04d}", register)
    return monitor, monitor.update(links, 0.0)


def _answer(req: Request, status: int, extra: str = "") -> Response:
    lines = [f"SIP/2.0 {status} X"] + [f"{n}: {v}" for n, v in (
        ("Via", req.headers.get("via")), ("From", req.headers.get("from")),
        ("To", f"{req.headers.get('to')};tag=carrier"), ("Call-ID", req.call_id), ("CSeq", req.headers.get("cseq")),
    )]  # fmt: skip
    resp = parse(("\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n").encode())
    assert isinstance(resp, Response)
    return resp


def _sent(actions: list) -> list[SendRequest]:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, SendRequest)]


def test_probes_take_a_dead_trunk_out_after_the_threshold_and_back_at_the_first_answer() -> None:
    monitor, first = _monitor([TrunkLink("a", DEST, probe_interval=10, probe_failures=3)])
    (probe,) = _sent(first)
    assert probe.request.method == "OPTIONS" and probe.request.uri == "sip:192.0.2.2:5060"
    assert monitor.next_deadline() == 10.0
    out = monitor.on_failure(probe.key, 503, 1.0)  # could not be sent: one failure
    assert out == [] and monitor.is_up("a")
    (probe,) = _sent(monitor.on_timer(10.0))
    assert monitor.on_response(probe.key, _answer(probe.request, 500), 11.0) == []  # 5xx: a failure too
    (probe,) = _sent(monitor.on_timer(20.0))
    out = monitor.on_timer(30.0)  # never answered by the time the next is due: the third failure
    assert [a for a in out if isinstance(a, TrunkState)] == [TrunkState("a", False, 408)]
    assert not monitor.is_up("a")
    (probe2,) = _sent(out)
    assert monitor.on_response(probe.key, _answer(probe.request, 200), 31.0) == []  # the late one: ignored
    assert monitor.on_response(probe2.key, _answer(probe2.request, 404), 32.0) == [TrunkState("a", True, 404)]
    assert monitor.is_up("a")


def test_one_failure_less_than_the_threshold_keeps_the_trunk_and_an_answer_resets_the_count() -> None:
    monitor, first = _monitor([TrunkLink("a", DEST, probe_interval=5, probe_failures=2)])
    (probe,) = _sent(first)
    monitor.on_failure(probe.key, 408, 1.0)
    (probe,) = _sent(monitor.on_timer(5.0))
    monitor.on_response(probe.key, _answer(probe.request, 200), 5.1)
    (probe,) = _sent(monitor.on_timer(10.0))
    assert monitor.on_failure(probe.key, 408, 11.0) == [] and monitor.is_up("a")


def test_registration_answers_the_challenge_refreshes_and_backs_off() -> None:
    reg = Registration("trunkuser", "trunkpw", expires=300, domain="carrier.test", retry_max=4)
    monitor, first = _monitor([TrunkLink("a", DEST, register=reg)])
    (register,) = _sent(first)
    req = register.request
    assert (req.method, req.uri) == ("REGISTER", "sip:carrier.test")
    assert req.headers.get("to") == "<sip:trunkuser@carrier.test>"
    assert req.headers.get("contact") == "<sip:trunkuser@192.0.2.1:5060>"
    assert req.headers.get("expires") == "300" and "authorization" not in req.headers
    challenge = 'Digest realm="carrier.test", nonce="abc123", qop="auth", algorithm=MD5'
    (retry,) = _sent(
        monitor.on_response(register.key, _answer(req, 401, f"WWW-Authenticate: {challenge}\r\n"), 0.1)
    )
    auth = parse_authorization(retry.request.headers.get("authorization") or "")
    assert auth["username"] == "trunkuser" and auth["uri"] == "sip:carrier.test"
    expected = compute_response(username="trunkuser", realm="carrier.test", nonce="abc123", method="REGISTER",
                                uri="sip:carrier.test", password="trunkpw", algorithm="MD5", qop="auth",
                                nc=int(auth["nc"], 16), cnonce=auth["cnonce"])  # fmt: skip
    assert auth["response"] == expected
    assert retry.request.cseq[0] == req.cseq[0] + 1 and retry.request.call_id == req.call_id
    ok = _answer(  # every binding of the AOR is listed: ours is the one that counts
        retry.request,
        200,
        "Contact: <sip:trunkuser@198.51.100.1:5060>;expires=3600\r\n"
        "Contact: <sip:trunkuser@192.0.2.1:5060>;expires=120\r\n",
    )
    assert monitor.on_response(retry.key, ok, 0.2) == [RegistrationState("a", True, 200, 120, 96.0)]
    assert monitor.next_deadline() == 96.2  # refreshed at 80 % of the granted time
    (refresh,) = _sent(monitor.on_timer(96.2))
    # a second challenge after credentials is a failure: retried after 1 s, then 2, 4, 4 (retry_max)
    (again,) = _sent(
        monitor.on_response(
            refresh.key, _answer(refresh.request, 401, f"WWW-Authenticate: {challenge}\r\n"), 96.3
        )
    )
    out = monitor.on_response(
        again.key, _answer(again.request, 401, f"WWW-Authenticate: {challenge}\r\n"), 96.4
    )
    assert out == [RegistrationState("a", False, 401, None, 1.0)]
    delays = []
    now = 96.4
    for _ in range(3):
        now = monitor.next_deadline() or 0.0
        (attempt,) = _sent(monitor.on_timer(now))
        (state,) = monitor.on_failure(attempt.key, 408, now + 0.5)
        delays.append(state.next_in)  # type: ignore[union-attr]
        now += 0.5
    assert delays == [2.0, 4.0, 4.0]


def test_only_the_registering_process_registers_and_probes_are_kept_across_an_unchanged_reload() -> None:
    reg = Registration("u", "p", domain="carrier.test")
    link = TrunkLink("a", DEST, probe_interval=10, register=reg)
    monitor, first = _monitor([link], register=False)
    assert [a.request.method for a in _sent(first)] == ["OPTIONS"]
    assert isinstance(_sent(first)[0].key, Probe)
    assert _sent(monitor.update([link], 1.0)) == []  # unchanged: nothing restarts
    moved = TrunkLink("a", Destination("udp", "192.0.2.9", 5060), probe_interval=10)
    (probe,) = _sent(monitor.update([moved], 2.0))
    assert probe.request.uri == "sip:192.0.2.9:5060" and not isinstance(probe.key, Registering)


def test_a_peer_host_is_up_while_it_answers_anything_and_a_silent_call_takes_it_down_at_once() -> None:
    """The platform's other hosts (``peer=True``, server.cluster) share the probes: any answer, a 503
    included, is alive; ``probe_failures`` unanswered in a row take it down, as does ``mark_down``
    (a call's INVITE through it went unanswered) without waiting; the next answer brings it back."""
    peer = TrunkLink("192.0.2.9:5071", Destination("udp", "192.0.2.9", 5071), 5, 2, peer=True)
    monitor, first = _monitor([peer, TrunkLink("a", DEST)])  # a trunk without probes: never down
    (probe,) = _sent(first)
    assert probe.request.method == "OPTIONS" and probe.request.uri == "sip:192.0.2.9:5071"
    assert monitor.on_response(probe.key, _answer(probe.request, 503), 0.1) == []  # alive: no change
    _sent(monitor.on_timer(5.0))
    out = monitor.on_timer(10.0)  # one unanswered: not yet
    assert not [a for a in out if isinstance(a, TrunkState)] and monitor.is_up(peer.name)
    out = monitor.on_timer(15.0)  # the second in a row
    assert [a for a in out if isinstance(a, TrunkState)] == [TrunkState(peer.name, False, 408, peer=True)]
    (probe,) = _sent(out)
    assert monitor.on_response(probe.key, _answer(probe.request, 200), 15.2) == [
        TrunkState(peer.name, True, 200, peer=True)
    ]
    # a call's INVITE found it silent: down at once; twice, or for a link not probed: nothing more
    assert monitor.mark_down(peer.name, 408) == [TrunkState(peer.name, False, 408, peer=True)]
    assert monitor.mark_down(peer.name, 408) == [] and monitor.mark_down("a", 408) == []
    assert not monitor.is_up(peer.name) and monitor.is_up("a")
    (probe,) = _sent(monitor.on_timer(20.0))
    out = monitor.on_response(probe.key, _answer(probe.request, 404), 20.1)  # back at the first answer
    assert out == [TrunkState(peer.name, True, 404, peer=True)] and monitor.is_up(peer.name)
