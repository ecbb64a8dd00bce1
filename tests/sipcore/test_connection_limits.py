"""The pure rules of stream connections: the cap's share per worker below the descriptor limit, the
message deadline and byte rate (keep-alives not counted), the throttled refusal log."""

from __future__ import annotations

from sipcore.connection_limits import RATE_GRACE, MessageClock, MessageRules, Throttle, connection_cap
from sipcore.framing import StreamFramer

RULES = MessageRules(message_timeout=10.0, min_byte_rate=100)


def test_cap_is_the_descriptors_less_the_reserve_by_default() -> None:
    assert connection_cap(None, 1, 20_000, 256) == 19_744
    assert connection_cap(None, 2, 20_000, 256) == 19_744  # each worker has its own descriptor table


def test_configured_cap_is_split_between_workers_and_kept_below_the_descriptors() -> None:
    assert connection_cap(1000, 1, 20_000, 256) == 1000
    assert connection_cap(1000, 2, 20_000, 256) == 500
    assert connection_cap(1001, 2, 20_000, 256) == 501  # rounded up: the server allows at least 1001
    assert connection_cap(50_000, 2, 2000, 256) == 1744  # the rlimit wins over a cap set too high
    assert connection_cap(None, 1, 100, 256) == 1  # a limit below the reserve still accepts one


def test_a_message_in_one_read_begins_nothing() -> None:
    clock = MessageClock(0.0, awaiting_first=False)
    clock.on_data(0, 1.0, completed=True)
    assert not clock.in_progress
    assert clock.verdict(RULES, 1000.0) is None


def test_half_sent_message_hits_the_deadline() -> None:
    clock = MessageClock(0.0, awaiting_first=False)
    clock.on_data(3000, 100.0, completed=False)  # fast enough, never finished
    assert clock.verdict(RULES, 109.9) is None
    assert clock.verdict(RULES, 110.1) == "message_timeout"


def test_trickle_is_too_slow_once_the_grace_has_passed() -> None:
    clock = MessageClock(0.0, awaiting_first=False)
    clock.on_data(1, 50.0, completed=False)
    assert clock.verdict(RULES, 50.0 + RATE_GRACE - 0.1) is None  # a split read is not judged at once
    clock.on_data(2, 51.0, completed=False)
    assert clock.verdict(RULES, 50.0 + RATE_GRACE + 0.1) == "too_slow"


def test_rate_is_judged_from_the_first_byte_of_this_message() -> None:
    clock = MessageClock(0.0, awaiting_first=False)
    clock.on_data(400, 10.0, completed=False)
    clock.on_data(0, 10.1, completed=True)  # finished: the clock stops
    assert not clock.in_progress
    clock.on_data(300, 500.0, completed=True)  # one finished and the next begun in the same read
    assert clock.began == 500.0 and clock.received == 300
    assert clock.verdict(RULES, 502.5) is None  # 300 bytes in 2.5 s: above 100 B/s
    assert clock.verdict(RULES, 504.0) == "too_slow"


def test_rate_rule_off() -> None:
    clock = MessageClock(0.0, awaiting_first=False)
    clock.on_data(1, 0.0, completed=False)
    assert clock.verdict(MessageRules(10.0, 0), 9.0) is None
    assert clock.verdict(MessageRules(10.0, 0), 10.5) == "message_timeout"


def test_accepted_connection_must_send_within_the_deadline() -> None:
    clock = MessageClock(0.0, awaiting_first=True)
    assert clock.verdict(RULES, 5.0) is None  # nothing sent yet: no rate to judge
    assert clock.verdict(RULES, 10.5) == "message_timeout"
    clock = MessageClock(0.0, awaiting_first=True)
    clock.on_data(0, 1.0, completed=True)  # a ping or a message: a live client
    assert clock.verdict(RULES, 1000.0) is None


def test_keepalive_crlfs_are_not_a_message() -> None:
    framer = StreamFramer()
    clock = MessageClock(0.0, awaiting_first=False)
    for t in range(1, 100):
        items = framer.feed(b"\r\n")  # half a ping, then the other half
        clock.on_data(framer.pending(), float(t), bool(items))
        assert not clock.in_progress
    assert framer.pending() == 0
    items = framer.feed(b"OPTIONS sip:x SIP/2.0\r\n")
    assert items == [] and framer.pending() == len(b"OPTIONS sip:x SIP/2.0\r\n")


def test_throttle_logs_once_per_interval_with_the_count() -> None:
    throttle = Throttle(10.0)
    assert throttle.note(0.0) == 1  # the first at once
    assert [throttle.note(t / 10) for t in range(1, 50)] == [0] * 49
    assert throttle.due(9.0) == 0
    assert throttle.due(10.0) == 49  # what the interval held back, once
    assert throttle.due(30.0) == 0
