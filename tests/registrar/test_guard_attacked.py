"""Brute-force guard: a username under attack refuses fresh sources unchecked while its known sources
pass; the events a guard shares with the other workers (failures, logins, bans) and the `ban` entry."""

from __future__ import annotations

from registrar.guard import BanReason, Guard, GuardConfig, IpBanned

T0 = 1_000.0
REAL = "198.51.100.7"  # the real user's phone
FRESH = "203.0.113.200"  # an address that never logged in as alice


def guard(share: bool = False, **kw: object) -> Guard:
    base: dict[str, object] = {"ip_threshold": 10, "user_threshold": 3, "slow_threshold": 0, "ban_time": 600}
    base.update(kw)
    return Guard(GuardConfig(**base), share=share)  # type: ignore[arg-type]


def attack(g: Guard, now: float, user: str = "alice", count: int = 3, net: int = 113) -> None:
    """``count`` failures against ``user`` from distinct sources of 203.0.``net``.0/24 (none reaches
    ip_threshold; the one that puts ``user`` under attack is banned)."""
    for i in range(count):
        g.record_failure(f"203.0.{net}.{i + 1}", user, now)


def test_fresh_sources_are_refused_once_the_username_is_under_attack() -> None:
    g = guard()
    g.record_success(REAL, "alice", T0)
    assert not g.refuses_guess(FRESH, "alice", T0 + 1)  # no attack yet: every guess is checked
    attack(g, T0 + 1, count=2)
    assert not g.refuses_guess(FRESH, "alice", T0 + 2)
    attack(g, T0 + 2, count=1)  # the 3rd failure against alice: under attack
    assert g.refuses_guess(FRESH, "alice", T0 + 3)
    assert not g.refuses_guess(REAL, "alice", T0 + 3)  # the real user's phone still passes
    assert not g.refuses_guess(FRESH, "bob", T0 + 3)  # other usernames are not affected
    assert not g.refuses_guess("127.0.0.1", "alice", T0 + 3)  # whitelisted
    # the caller records the refused attempt as a failure: it bans the fresh source
    assert g.record_failure(FRESH, "alice", T0 + 3) == IpBanned(
        FRESH, T0 + 603, BanReason.USERNAME_FAILURES, "alice"
    )


def test_known_source_is_never_banned_for_the_usernames_count() -> None:
    g = guard(ip_threshold=3)
    g.record_success(REAL, "alice", T0)
    attack(g, T0 + 1)
    assert g.record_failure(REAL, "alice", T0 + 2) is None  # the real user's typo during the attack
    assert g.record_failure(REAL, "alice", T0 + 3) is None
    # its own source count still applies
    event = g.record_failure(REAL, "alice", T0 + 4)
    assert event is not None and event.reason is BanReason.SOURCE_FAILURES


def test_attack_lasts_ban_time_after_the_last_failure() -> None:
    g = guard(window=60, ban_time=600)
    attack(g, T0)
    assert g.refuses_guess(FRESH, "alice", T0 + 599)
    assert not g.refuses_guess(FRESH, "alice", T0 + 600)  # no failure for ban_time: over
    attack(g, T0 + 1000)
    g.record_failure("192.0.2.50", "alice", T0 + 1500)  # one more failure renews the attack
    assert g.refuses_guess(FRESH, "alice", T0 + 2099)
    assert not g.refuses_guess(FRESH, "alice", T0 + 2100)
    g.expire(T0 + 2100)
    assert not g._attacked  # purged


def test_a_long_attack_yields_at_most_user_threshold_checked_guesses() -> None:
    """20 sources guessing alice one after another for an hour, a guess every 2 s, while the real
    phone logs in every 30 s: the guesses checked (not refused, not from a banned source) stop at
    user_threshold; the phone is never refused or banned."""
    g = guard(user_threshold=30, ban_time=600)
    sources = [f"203.0.113.{i}" for i in range(1, 21)]
    checked = 0
    for step in range(1800):
        now = T0 + 2 * step
        if step % 15 == 0:
            assert not g.is_banned(REAL, now) and not g.refuses_guess(REAL, "alice", now)
            g.record_success(REAL, "alice", now)
        src = sources[step % 20]
        if g.is_banned(src, now):
            continue
        if g.refuses_guess(src, "alice", now):
            g.record_failure(src, "alice", now)
            continue
        checked += 1
        g.record_failure(src, "alice", now)
    assert checked == 30


def test_known_sources_are_bounded_and_expire() -> None:
    g = guard(max_known_sources=2, known_source_time=100)
    g.record_success("192.0.2.1", "alice", T0)
    g.record_success("192.0.2.2", "alice", T0 + 1)
    g.record_success("192.0.2.3", "alice", T0 + 2)  # the oldest is forgotten
    attack(g, T0 + 3)
    assert g.refuses_guess("192.0.2.1", "alice", T0 + 4)
    assert not g.refuses_guess("192.0.2.2", "alice", T0 + 4)
    assert not g.refuses_guess("192.0.2.3", "alice", T0 + 4)
    assert g.refuses_guess("192.0.2.3", "alice", T0 + 102)  # not seen for known_source_time
    small = guard(max_tracked_users=5, ip_threshold=1000)
    for i in range(50):
        small.record_success("192.0.2.1", f"user{i}", T0)
        attack(small, T0, user=f"user{i}", net=i)
    assert len(small._known) == 5 and len(small._attacked) == 5


def test_ban_entry_point() -> None:
    g = guard()
    event = g.ban(FRESH, BanReason.SCANNER, T0)
    assert event == IpBanned(FRESH, T0 + 600, BanReason.SCANNER, None)
    assert g.is_banned(FRESH, T0 + 1)
    assert g.ban(FRESH, BanReason.SCANNER, T0 + 1) is None  # already banned
    assert g.ban("127.0.0.1", BanReason.SCANNER, T0) is None  # whitelisted


# ---- what a guard shares with the other workers --------------------------------------------------
def relay(src: Guard, dst: Guard) -> None:
    """What the adapter does with the queued events (server/guard_share.py)."""
    for kind, key, user, now in src.take_shared():
        (dst.record_peer_failure if kind == "f" else dst.record_peer_success)(key, user, now)


def test_thresholds_hold_for_the_sum_of_two_workers() -> None:
    a, b = guard(share=True, ip_threshold=4), guard(share=True, ip_threshold=4)
    assert a.record_failure(FRESH, "u1", T0) is None
    relay(a, b)
    assert b.record_failure(FRESH, "u2", T0 + 1) is None
    relay(b, a)
    assert a.record_failure(FRESH, "u3", T0 + 2) is None
    relay(a, b)
    event = b.record_failure(FRESH, "u4", T0 + 3)  # the 4th failure server-wide, the 2nd here
    assert event is not None and event.reason is BanReason.SOURCE_FAILURES
    assert a.failures_total == 2 and b.failures_total == 2  # each counts its own for the metric


def test_peer_failures_count_but_never_ban() -> None:
    g = guard(ip_threshold=2)
    for i in range(5):
        g.record_peer_failure(FRESH, "alice", T0 + i)
    assert not g.is_banned(FRESH, T0 + 5)
    assert g.refuses_guess(FRESH, "alice", T0 + 5)  # the username's attack is known from peers
    assert g.record_failure(FRESH, "alice", T0 + 5) is not None  # the next local failure decides


def test_logins_are_shared_only_when_they_change_something() -> None:
    a, b = guard(share=True, known_source_time=100), guard()
    a.record_success(REAL, "alice", T0)
    assert a.take_shared() == [("s", REAL, "alice", T0)]
    a.record_success(REAL, "alice", T0 + 10)  # the phone's next refresh: nothing new
    assert a.take_shared() == []
    a.record_failure(REAL, "alice", T0 + 11)
    a.record_success(REAL, "alice", T0 + 12)  # its typo taken back: shared
    assert [e[0] for e in a.take_shared()] == ["f", "s"]
    a.record_success(REAL, "alice", T0 + 60)  # the first login in a new half of known_source_time
    events = a.take_shared()
    assert events == [("s", REAL, "alice", T0 + 60)]
    relay_events = events
    for _, key, user, now in relay_events:
        b.record_peer_success(key, user, now)
    attack(b, T0 + 61)
    assert not b.refuses_guess(REAL, "alice", T0 + 62)
    assert b.refuses_guess(FRESH, "alice", T0 + 62)
    assert guard().take_shared() == []  # without share nothing is queued


def test_installed_bans() -> None:
    g = guard(ip_threshold=3)
    g.record_failure(FRESH, None, T0)
    assert g.install_ban(FRESH, T0 + 600, T0 + 1)
    assert g.is_banned(FRESH, T0 + 2)
    assert not g.install_ban(FRESH, T0 + 601, T0 + 2)  # held already: not new
    assert not g.install_ban("192.0.2.9", T0, T0 + 1)  # already over
    assert not g.is_banned(FRESH, T0 + 601)
    assert g.install_ban(FRESH, T0 + 1300, T0 + 700)  # a new ban once the first is over
    assert g.record_failure(FRESH, None, T0 + 1301) is None  # counters restarted at the ban


def test_slow_distributed_guessing_puts_the_username_under_attack() -> None:
    """29 failures a minute against one username from ever new sources never reach user_threshold
    (30) in the fixed 60 s window; within the sliding slow_window (600 s) they do."""
    g = guard(user_threshold=30, window=60, slow_window=600, slow_threshold=5)
    now = T0
    for i in range(30):
        assert not g.refuses_guess(FRESH, "alice", now)
        g.record_failure(f"203.0.{i}.1", "alice", now)
        now += 60 / 29 + 0.01  # just under 29 a minute
    assert g.refuses_guess(FRESH, "alice", now)
    off = guard(user_threshold=30, window=60, slow_threshold=0)  # without the slow window: only the fixed one
    now = T0
    for i in range(30):
        off.record_failure(f"203.0.{i}.1", "alice", now)
        now += 60 / 29 + 0.01
    assert not off.refuses_guess(FRESH, "alice", now)
