"""The REGISTER lane's answer cache is bounded against uncredentialed floods: beyond its cap a 401 is
sent without being kept (a stateless challenge), while answers that follow verified credentials are
always kept for their retransmissions."""

from __future__ import annotations

from registrar.lane import AnswerCache

CHALLENGE = b"SIP/2.0 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
OK = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def key(i: int) -> tuple[str, str, int, str]:
    return (f"z9hG4bK{i}", "127.0.0.1", 5060, "REGISTER")


def test_challenges_beyond_the_cap_are_not_kept_other_answers_are() -> None:
    cache = AnswerCache(32.0, max_entries=3)
    for i in range(3):
        cache.keep(key(i), CHALLENGE, 0.0)
    cache.keep(key(3), CHALLENGE, 1.0)
    assert cache.get(key(3), 1.0) is False and cache.not_kept == 1 and len(cache) == 3
    assert cache.get(key(0), 1.0) == CHALLENGE  # those kept are answered again
    cache.keep(key(4), OK, 1.0)  # after verified credentials: kept whatever the count
    assert cache.get(key(4), 1.0) == OK and len(cache) == 4
    cache.keep(key(5), CHALLENGE, 40.0)  # the first ones expired: room again
    assert cache.get(key(5), 40.0) == CHALLENGE and cache.not_kept == 1


def test_a_flood_of_distinct_challenges_stays_at_the_cap() -> None:
    cache = AnswerCache(32.0, max_entries=1000)
    for i in range(100_000):
        cache.keep(key(i), CHALLENGE, i / 10_000)  # 10,000 a second for 10 s
    assert len(cache) == 1000 and cache.not_kept == 99_000
