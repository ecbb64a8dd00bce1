"""Brute-force guard: thresholds, windows, bans, whitelist, scanners, bounded memory."""

from __future__ import annotations

import pytest

from registrar.guard import BanReason, Guard, GuardConfig, IpBanned, Verdict

T0 = 1_000.0
ATTACKER = "203.0.113.9"


def guard(**kw: object) -> Guard:
    return Guard(GuardConfig(**kw))  # type: ignore[arg-type]


def test_ip_threshold_bans_on_the_nth_failure() -> None:
    g = guard(ip_threshold=3, window=60, ban_time=600)
    assert g.record_failure(ATTACKER, "alice", T0) is None
    assert g.record_failure(ATTACKER, "bob", T0 + 1) is None
    assert not g.is_banned(ATTACKER, T0 + 1)
    event = g.record_failure(ATTACKER, "carol", T0 + 2)
    assert event == IpBanned(ATTACKER, T0 + 602, BanReason.SOURCE_FAILURES, "carol")
    assert g.is_banned(ATTACKER, T0 + 3)
    assert g.check_request(ATTACKER, "Yealink", T0 + 3) == (Verdict.DROP_BANNED, None)
    assert not g.is_banned("203.0.113.10", T0 + 3)


def test_window_expiry_forgets_old_failures() -> None:
    g = guard(ip_threshold=3, window=60)
    g.record_failure(ATTACKER, None, T0)
    g.record_failure(ATTACKER, None, T0 + 59)
    assert g.record_failure(ATTACKER, None, T0 + 60) is None  # new window: count is 1
    g.record_failure(ATTACKER, None, T0 + 61)
    assert g.record_failure(ATTACKER, None, T0 + 62) is not None


def test_ban_expiry() -> None:
    g = guard(ip_threshold=1, ban_time=100)
    assert g.record_failure(ATTACKER, None, T0) is not None
    assert g.is_banned(ATTACKER, T0 + 99.9)
    assert not g.is_banned(ATTACKER, T0 + 100)
    assert g.stats(T0 + 100).bans_active == 0
    assert g.check_request(ATTACKER, "Yealink", T0 + 100) == (Verdict.ALLOW, None)


def test_ban_resets_the_source_counter() -> None:
    g = guard(ip_threshold=2, ban_time=10, window=1000)
    g.record_failure(ATTACKER, None, T0)
    assert g.record_failure(ATTACKER, None, T0 + 1) is not None
    assert g.record_failure(ATTACKER, None, T0 + 12) is None  # one fresh failure after the ban
    assert g.stats(T0 + 12).bans_total == 1


def test_failures_while_banned_do_not_extend_the_ban() -> None:
    g = guard(ip_threshold=1, ban_time=100)
    g.record_failure(ATTACKER, None, T0)
    assert g.record_failure(ATTACKER, None, T0 + 50) is None
    assert not g.is_banned(ATTACKER, T0 + 100)


def test_distributed_guessing_of_one_username() -> None:
    g = guard(ip_threshold=100, user_threshold=5)
    sources = [f"198.51.100.{i}" for i in range(10)]
    events = [g.record_failure(ip, "alice", T0 + i) for i, ip in enumerate(sources)]
    assert events[:4] == [None] * 4
    assert all(e is not None and e.reason is BanReason.USERNAME_FAILURES for e in events[4:])
    assert not g.is_banned(sources[0], T0 + 20) and g.is_banned(sources[9], T0 + 20)


def test_success_takes_back_only_its_own_sources_failures() -> None:
    g = guard(ip_threshold=3, user_threshold=3)
    g.record_failure("198.51.100.2", "alice", T0)  # the real user mistypes once
    g.record_failure("198.51.100.1", "alice", T0)
    g.record_success("198.51.100.2", "alice", T0 + 1)  # ...then gets in: its typo is taken back
    assert g.record_failure("198.51.100.3", "alice", T0 + 2) is None  # alice's count: 2, not 3
    g.record_success("198.51.100.2", "alice", T0 + 3)  # another source's success: nothing to take back
    event = g.record_failure("198.51.100.4", "alice", T0 + 4)
    assert event is not None and event.reason is BanReason.USERNAME_FAILURES
    g.record_failure(ATTACKER, "bob", T0 + 5)
    g.record_failure(ATTACKER, "bob", T0 + 5)
    g.record_success(ATTACKER, "carol", T0 + 6)  # a valid account does not clear the source
    assert g.record_failure(ATTACKER, "dave", T0 + 7) is not None


def test_real_users_successes_do_not_reset_a_distributed_attack() -> None:
    """20 sources guessing alice's password while her phone registers every 0.5 s from its own address:
    the guessers are banned by the per-username threshold (before: every success reset the count)."""
    g = guard(ip_threshold=10, user_threshold=30, slow_threshold=0)
    guessers = [f"198.51.100.{i}" for i in range(1, 21)]
    phone = "192.0.2.50"
    now, answered, bans = T0, 0, []
    for _ in range(9):  # under ip_threshold per source
        for ip in guessers:
            g.record_success(phone, "alice", now)
            now += 0.5
            if g.is_banned(ip, now):
                continue
            answered += 1
            event = g.record_failure(ip, "alice", now)
            if event is not None:
                bans.append(event)
    assert {e.reason for e in bans} == {BanReason.USERNAME_FAILURES}
    assert all(g.is_banned(ip, now) for ip in guessers)
    assert answered == 30 + 19  # the 30th failure bans; each other guesser is banned on its next one
    assert not g.is_banned(phone, now)


def test_slow_guessing_is_banned_by_the_slow_window() -> None:
    """1 guess every 7 s never reaches 10 in a fixed 60 s window; 5 within 600 s bans it."""
    g = guard(ip_threshold=10, window=60, slow_window=600, slow_threshold=5, ban_time=600)
    events = [g.record_failure(ATTACKER, f"user{i}", T0 + 7 * i) for i in range(10)]
    assert events[:4] == [None] * 4
    assert events[4] == IpBanned(ATTACKER, T0 + 28 + 600, BanReason.SOURCE_FAILURES, "user4")
    assert g.is_banned(ATTACKER, T0 + 29)
    # with the slow window off, the same pace is never banned (what the slow window fixes)
    g = guard(ip_threshold=10, window=60, slow_threshold=0)
    assert all(g.record_failure(ATTACKER, None, T0 + 7 * i) is None for i in range(100))


def test_slow_window_slides() -> None:
    """Failures older than slow_window drop out one by one (no fixed window to wait out)."""
    g = guard(ip_threshold=100, slow_window=600, slow_threshold=3)
    assert g.record_failure(ATTACKER, None, T0) is None
    assert g.record_failure(ATTACKER, None, T0 + 300) is None
    assert g.record_failure(ATTACKER, None, T0 + 600) is None  # the first has left the window
    assert g.record_failure(ATTACKER, None, T0 + 899) is not None  # 300, 600, 899: within 600 s
    assert g.stats(T0 + 899).tracked_sources == 0
    g = guard(ip_threshold=100, slow_window=600, slow_threshold=3)
    g.record_failure(ATTACKER, None, T0)
    g.expire(T0 + 600)
    assert not g._slow  # an idle source's slow window is purged
    assert g.record_failure(ATTACKER, None, T0 + 601) is None


def test_whitelist_never_banned_nor_counted() -> None:
    g = guard(ip_threshold=1, whitelist=("10.0.0.0/8", "2001:db8:1::/48"))
    for ip in ("10.1.2.3", "2001:db8:1::5"):
        assert g.is_whitelisted(ip)
        assert g.record_failure(ip, "alice", T0) is None
        assert not g.is_banned(ip, T0)
        assert g.check_request(ip, "friendly-scanner", T0) == (Verdict.ALLOW, None)
    assert g.stats(T0).failures_total == 0
    assert not g.is_whitelisted("not-an-ip")
    assert not g.is_whitelisted("127.0.0.1")  # a configured whitelist replaces the default one
    assert Guard().is_whitelisted("127.0.0.1") and Guard().is_whitelisted("::1")


@pytest.mark.parametrize(
    "ua", ["friendly-scanner", "sipvicious 0.3", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "SIPVicious"]
)
def test_scanners_dropped_and_banned(ua: str) -> None:
    g = guard()
    verdict, event = g.check_request(ATTACKER, ua, T0)
    assert verdict is Verdict.DROP_SCANNER
    assert event is not None and event.reason is BanReason.SCANNER
    assert g.is_banned(ATTACKER, T0 + 1)
    assert g.stats(T0 + 1).scanners_total == 1


def test_scanner_options() -> None:
    drop_only = guard(ban_scanners=False)
    assert drop_only.check_request(ATTACKER, "friendly-scanner", T0) == (Verdict.DROP_SCANNER, None)
    assert not drop_only.is_banned(ATTACKER, T0)
    allow = guard(block_scanners=False)
    assert allow.check_request(ATTACKER, "friendly-scanner", T0) == (Verdict.ALLOW, None)
    assert guard().check_request(ATTACKER, "Yealink SIP-T46S 66.86.0.15", T0) == (Verdict.ALLOW, None)
    assert guard().check_request(ATTACKER, None, T0) == (Verdict.ALLOW, None)


def test_ipv6_banned_by_prefix() -> None:
    g = guard(ip_threshold=2)
    g.record_failure("2001:db8:aa:bb::1", None, T0)
    event = g.record_failure("2001:db8:aa:bb::2", None, T0 + 1)  # same /64, other address
    assert event is not None and event.source == "2001:db8:aa:bb::/64"
    assert g.is_banned("2001:db8:aa:bb:ffff::9", T0 + 2)
    assert not g.is_banned("2001:db8:aa:bc::1", T0 + 2)
    assert g.unban("2001:db8:aa:bb::77") and not g.is_banned("2001:db8:aa:bb::1", T0 + 2)


def test_flood_of_distinct_sources_is_bounded() -> None:
    cap = 5_000
    g = guard(max_tracked_ips=cap, max_tracked_users=cap, max_bans=cap, ip_threshold=2, window=3600)
    for i in range(100_000):
        ip = f"100.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        g.record_failure(ip, f"user{i}", T0 + i * 0.001)
    stats = g.stats(T0 + 100)
    assert stats.tracked_sources <= cap and stats.tracked_users <= cap
    assert stats.failures_total == 100_000 and stats.bans_active == 0
    assert stats.evictions_total >= 2 * (100_000 - cap)


def test_flood_of_bans_is_bounded() -> None:
    cap = 1_000
    g = guard(max_bans=cap, ip_threshold=1, ban_time=10_000)
    for i in range(20_000):
        g.record_failure(f"100.64.{i >> 8}.{i & 255}", None, T0 + i * 0.01)
    stats = g.stats(T0 + 200)
    assert stats.bans_active == cap and stats.bans_total == 20_000
    assert g.is_banned("100.64.78.31", T0 + 200)  # the newest ban (i = 19999) survives
    assert not g.is_banned("100.64.0.0", T0 + 200)  # the oldest was evicted


def test_stats_and_housekeeping() -> None:
    g = guard(ip_threshold=2, window=10, ban_time=50)
    g.record_failure("192.0.2.1", "a", T0)
    g.record_failure("192.0.2.2", "b", T0)
    g.record_failure("192.0.2.2", "b", T0 + 1)
    s = g.stats(T0 + 1)
    assert (s.failures_total, s.bans_total, s.bans_active, s.tracked_sources, s.tracked_users) == (
        3,
        1,
        1,
        1,
        2,
    )
    assert g.next_deadline() == T0 + 51
    assert g.banned(T0 + 2) == {"192.0.2.2": T0 + 51}
    s = g.stats(T0 + 60)
    assert (s.bans_active, s.tracked_sources, s.tracked_users, s.bans_total) == (0, 0, 0, 1)
    assert g.next_deadline() is None


def test_slow_window_carried_over_a_reload_takes_the_new_threshold() -> None:
    """The server moves the tables into the new guard on reload (server/registrar_service.py)."""
    old = guard(ip_threshold=100, slow_threshold=3)
    old.record_failure(ATTACKER, None, T0)
    old.record_failure(ATTACKER, None, T0 + 1)
    new = guard(ip_threshold=100, slow_threshold=5)
    new._slow = old._slow
    assert [new.record_failure(ATTACKER, None, T0 + 2 + i) for i in range(2)] == [None, None]
    assert new.record_failure(ATTACKER, None, T0 + 4) is not None  # the 5th within 600 s


@pytest.mark.parametrize(
    "kw",
    [
        {"window": 0},
        {"ban_time": -1},
        {"ip_threshold": 0},
        {"slow_threshold": -1},
        {"slow_window": 0},
        {"max_bans": 0},
        {"ipv6_prefix": 0},
        {"whitelist": ("10.0.0.0/33",)},
    ],
)
def test_config_validation(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GuardConfig(**kw)  # type: ignore[arg-type]
