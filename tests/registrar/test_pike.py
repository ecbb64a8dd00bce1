"""The per-source request-rate limit (registrar/pike.py): one report per excess, a sliding window,
IPv6 per /64, bounded tables."""

from __future__ import annotations

import pytest

from registrar.pike import Pike, PikeConfig, RateExceeded


def test_under_the_limit_nothing_over_it_one_report_then_counting_starts_again() -> None:
    pike = Pike(PikeConfig(requests=10, window=2.0))
    assert all(pike.hit("192.0.2.1", 100.0 + i * 0.01) is None for i in range(10))
    event = pike.hit("192.0.2.1", 100.1)
    assert isinstance(event, RateExceeded) and event.source == "192.0.2.1"
    assert event.rate == pytest.approx(110.0)  # 11 messages in 0.1 s: the source's own rate
    # reported once: the source's count starts again (a whitelisted source is not reported per message)
    assert all(pike.hit("192.0.2.1", 100.2) is None for _ in range(10))
    assert pike.hit("192.0.2.1", 100.2) is not None
    assert pike.stats(100.2).exceeded_total == 2


def test_other_sources_are_counted_apart() -> None:
    pike = Pike(PikeConfig(requests=3, window=1.0))
    for _ in range(3):
        assert pike.hit("192.0.2.1", 10.0) is None
        assert pike.hit("192.0.2.2", 10.0) is None
    assert pike.hit("192.0.2.2", 10.0) is not None
    assert pike.hit("192.0.2.3", 10.0) is None


def test_sliding_window_a_burst_across_the_boundary_is_not_let_through_twice() -> None:
    pike = Pike(PikeConfig(requests=100, window=2.0))
    for _ in range(90):  # late in the first window
        assert pike.hit("192.0.2.1", 11.9) is None
    # early in the next window the previous one still weighs ~95 %: 15 more go over 100 in all
    events = [pike.hit("192.0.2.1", 12.1) for _ in range(15)]
    assert any(e is not None for e in events)
    # a fixed window would have let 100 more through here; the steady rate of 50/s stays under
    steady = Pike(PikeConfig(requests=100, window=2.0))
    assert all(steady.hit("192.0.2.9", 20.0 + i * 0.025) is None for i in range(400))  # 10 s


def test_a_window_long_past_weighs_nothing() -> None:
    pike = Pike(PikeConfig(requests=10, window=1.0))
    for _ in range(10):
        assert pike.hit("192.0.2.1", 1.0) is None
    for _ in range(10):  # two windows later: the old count is gone
        assert pike.hit("192.0.2.1", 3.5) is None


def test_ipv6_counted_per_64() -> None:
    pike = Pike(PikeConfig(requests=4, window=1.0))
    for i in range(4):
        assert pike.hit(f"2001:db8:1:2::{i + 1}", 5.0) is None
    event = pike.hit("2001:db8:1:2:ffff::9", 5.0)
    assert event is not None and event.source == "2001:db8:1:2::/64"
    assert pike.hit("2001:db8:1:3::1", 5.0) is None  # another /64


def test_table_is_bounded_under_spoofed_sources() -> None:
    pike = Pike(PikeConfig(requests=5, window=10.0, max_tracked=100))
    for i in range(5000):
        pike.hit(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1.0)
    stats = pike.stats(1.0)
    assert stats.tracked == 100 and stats.evictions_total == 4900
    assert pike.stats(100.0).tracked == 0  # expired counters purged


def test_forget_and_bad_configuration() -> None:
    pike = Pike(PikeConfig(requests=2, window=1.0))
    pike.hit("192.0.2.1", 1.0)
    pike.hit("192.0.2.1", 1.0)
    pike.forget("192.0.2.1")
    assert pike.hit("192.0.2.1", 1.0) is None
    for bad in ({"requests": 0}, {"window": 0}, {"ban_time": 0}, {"max_tracked": 0}, {"ipv6_prefix": 0}):
        with pytest.raises(ValueError):
            PikeConfig(**bad)  # type: ignore[arg-type]
