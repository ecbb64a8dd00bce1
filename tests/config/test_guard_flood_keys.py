"""The flood keys of `registrar.guard` (docs/configuration.md): the rate limit's bounds and the
nftables set names, refused with a clear message when malformed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.schema import Guard, RateLimit
from server.flood_gate import build_mirror, build_pike


def test_defaults_and_what_they_build() -> None:
    guard = Guard()
    assert guard.rate_limit == RateLimit(enabled=True, requests=200, window=2, ban_time=300)
    pike = build_pike(guard.rate_limit)
    assert pike is not None and (pike.config.requests, pike.config.window, pike.config.ban_time) == (
        200,
        2.0,
        300.0,
    )
    assert build_mirror(guard) is None  # no set: no nftables
    assert build_pike(RateLimit(enabled=False)) is None


def test_nft_sets_are_family_table_set() -> None:
    guard = Guard(nft_set="inet sipcore banned4", nft_set6="ip6 filter sip_banned6")
    mirror = build_mirror(guard)
    assert mirror is not None and (mirror.set4, mirror.set6) == (
        "inet sipcore banned4",
        "ip6 filter sip_banned6",
    )
    for bad in ("banned4", "inet sipcore", "inet sipcore banned4; flush ruleset", "arp t s", "inet t s x"):
        with pytest.raises(ValidationError, match="is not an nftables set"):
            Guard(nft_set=bad)


@pytest.mark.parametrize("field", [{"requests": 0}, {"window": 0}, {"ban_time": 0}])
def test_rate_limit_bounds(field: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        RateLimit(**field)  # type: ignore[arg-type]
