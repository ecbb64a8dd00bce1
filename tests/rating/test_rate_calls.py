"""Rating finished calls: DOMAIN.md's worked numbers as vectors, then the edges."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from rating.errors import NoRate, SetupError, UnknownAccount
from rating.model import DidBilling, Direction, Pricing, Pulse, RatingSetup
from rating.rater import Rater
from tests.rating.builders import call, rater, setup


@pytest.mark.parametrize(
    ("pulse", "billed", "price"),
    [(Pulse(60, 60), 120, "0.027600"), (Pulse(6, 6), 66, "0.015180"), (Pulse(1, 1), 61, "0.014030")],
)
def test_domain_61_seconds_at_0_0138(pulse: Pulse, billed: int, price: str) -> None:
    r = rater(package={"pulse": pulse})
    rated = r.rate(call("+33612345678", 61))
    assert (rated.billed_seconds, rated.price) == (billed, D(price))
    assert rated.pricing is Pricing.MARKUP
    # carrier cost per second (default increments): 0.009 x 61/60 = 0.00915
    assert rated.cost == D("0.009150")
    assert rated.margin == rated.price - rated.cost
    assert (rated.matched_prefix, rated.destination_name) == ("+336", "France mobile")
    assert rated.category == "mobile"
    assert (rated.package, rated.currency, rated.customer_id) == ("p", "EUR", "c")


def test_domain_bundle_exhausted_mid_call() -> None:
    # 100-minute bundle, 98 used: a 191 s call uses the last 2; the remaining 71 s bill 120 s at pulse 60
    r = rater(package={"free_minutes": 100})
    rated = r.rate(call(duration=191), free_minutes_left=2)
    assert (rated.free_minutes_used, rated.billed_seconds, rated.price) == (2, 120, D("0.027600"))


def test_free_minutes_cover_whole_call_rounded_up() -> None:
    r = rater(package={"free_minutes": 100})
    rated = r.rate(call(duration=191), free_minutes_left=100)
    assert (rated.free_minutes_used, rated.billed_seconds, rated.price) == (4, 0, D(0))
    assert rated.cost == D("0.028650")  # the carrier still charges 191 s


def test_free_minutes_exactly_enough_and_none_left() -> None:
    r = rater(package={"free_minutes": 10})
    assert r.rate(call(duration=180), free_minutes_left=3).free_minutes_used == 3
    rated = r.rate(call(duration=181), free_minutes_left=3)
    assert (rated.free_minutes_used, rated.billed_seconds) == (3, 60)  # 1 s left bills one pulse
    rated = r.rate(call(duration=61), free_minutes_left=0)
    assert (rated.free_minutes_used, rated.billed_seconds) == (0, 120)


def test_package_without_bundle_ignores_free_minutes_left() -> None:
    assert rater().rate(call(), free_minutes_left=50).free_minutes_used == 0


@pytest.mark.parametrize(("duration", "billed"), [(0, 0), (60, 60), (61, 120), (119, 120), (120, 120)])
def test_pulse_edges_on_the_price(duration: int, billed: int) -> None:
    rated = rater().rate(call(duration=duration))
    assert rated.billed_seconds == billed
    assert rated.price == D("0.00023") * billed  # 0.0138 / 60 per second, exact here


def test_zero_second_answered_call_pays_connect_fees_only() -> None:
    r = rater(package={"connect_fee": D("0.01")})
    rated = r.rate(call(duration=0))
    assert (rated.billed_seconds, rated.price, rated.cost) == (0, D("0.01"), D(0))
    premium = r.rate(call("+33891234567", duration=0))
    assert premium.cost == D("0.05")  # carrier connect fee of the premium row


def test_unanswered_call_costs_nothing() -> None:
    rated = rater(package={"connect_fee": D("0.01")}).rate(call(duration=0, answered=False))
    assert (rated.pricing, rated.billed_seconds, rated.price, rated.cost) == (Pricing.UNANSWERED, 0, 0, 0)
    assert rated.matched_prefix == "+336"


def test_carrier_increments_apply_to_cost_only() -> None:
    rated = rater(package={"pulse": Pulse(1, 1)}).rate(call("+33891234567", 61))
    # cost: 0.35 x 120 s / 60 + 0.05 connect = 0.75; price: (0.35 + 0.0025) x 1.2 x 61/60
    assert rated.cost == D("0.75")
    assert rated.price == D("0.430050")


def test_sell_connect_fee_with_free_minutes() -> None:
    r = rater(package={"free_minutes": 10, "connect_fee": D("0.02")})
    rated = r.rate(call(duration=30), free_minutes_left=10)
    assert (rated.free_minutes_used, rated.price) == (1, D("0.02"))  # bundle covers duration, not fees


def test_included_categories_and_free_zones_price_zero_keep_cost() -> None:
    r = rater(
        package={
            "included_categories": frozenset({"fixed", "mobile"}),
            "free_country_codes": frozenset({"352"}),
            "free_prefixes": frozenset({"+447"}),
            "free_cost_threshold": D("0.0005"),
        }
    )
    cases = {
        "+33612345678": Pricing.INCLUDED,
        "+33145678901": Pricing.INCLUDED,
        "+352123456": Pricing.FREE_ZONE,  # country code
        "+447700900123": Pricing.FREE_ZONE,  # prefix
        "+12125551234": Pricing.FREE_ZONE,  # cost 0.0004 <= threshold
        "+442071234567": Pricing.MARKUP,
        "+33891234567": Pricing.MARKUP,  # premium is not "fixed"
    }
    for number, pricing in cases.items():
        rated = r.rate(call(number, 90))
        assert rated.pricing is pricing, number
        assert (rated.price_micros == 0) == (pricing is not Pricing.MARKUP), number
        assert rated.cost_micros > 0, number


def test_precedence_override_then_free_zone_then_included_then_markup() -> None:
    r = rater(
        package={
            "overrides": {"+3361": D("0.05"), "+3362": D(0), "+4420": D("0.03")},
            "free_prefixes": frozenset({"+336", "+44"}),
            "included_categories": frozenset({"mobile", "international"}),
        }
    )
    # override beats a free zone, even one shorter than the override
    assert r.rate(call("+33612345678", 60)).pricing is Pricing.OVERRIDE
    assert r.rate(call("+33612345678", 60)).price == D("0.05")
    assert r.rate(call("+33622345678", 60)).price == D(0)  # zero override
    # free zone beats included category
    assert r.rate(call("+33633345678", 60)).pricing is Pricing.FREE_ZONE
    assert r.rate(call("+442071234567", 60)).pricing is Pricing.OVERRIDE
    assert r.rate(call("+441611234567", 60)).pricing is Pricing.FREE_ZONE
    # included beats markup
    assert r.rate(call("+352123456", 60)).pricing is Pricing.INCLUDED


def test_override_longer_than_any_rate_row_keeps_the_rows_cost() -> None:
    r = rater(package={"overrides": {"+336123": D("0.10")}})
    rated = r.rate(call("+33612345678", 60))
    assert (rated.matched_prefix, rated.price, rated.cost) == ("+336123", D("0.1"), D("0.009"))
    assert rated.destination_name == "France mobile"
    assert r.rate(call("+33619999999", 60)).matched_prefix == "+336"


def test_on_net_and_internal_calls_are_free() -> None:
    r = rater()
    on_net = r.rate(call("+33184000001", 300, on_net=True))
    assert (on_net.pricing, on_net.price, on_net.cost, on_net.billed_seconds) == (Pricing.ON_NET, 0, 0, 0)
    internal = r.rate(call("1001", 300, direction=Direction.INTERNAL))
    assert (internal.pricing, internal.price) == (Pricing.INTERNAL, 0)


def test_internal_customer_is_never_billed_but_cost_is_recorded() -> None:
    rated = rater(customer={"internal": True}).rate(call(duration=61))
    assert (rated.pricing, rated.price, rated.cost) == (Pricing.INTERNAL, 0, D("0.00915"))
    assert rated.free_minutes_used == 0


def test_forwarded_leg_is_rated_like_outbound_to_the_forwarding_account() -> None:
    rated = rater().rate(call(duration=61, direction=Direction.FORWARDED))
    assert (rated.direction, rated.account_id, rated.price) == (Direction.FORWARDED, "a", D("0.0276"))


def test_inbound_did_incoming_rate_by_its_pulse() -> None:
    did = DidBilling("+33184000001", "c", incoming_rate_per_minute=D("0.01"), pulse=Pulse(30, 6))
    r = rater(dids=(did,))
    rated = r.rate(call("+33184000001", 31, direction=Direction.INBOUND, account_id=None))
    assert (rated.billed_seconds, rated.price, rated.cost) == (36, D("0.006"), 0)
    assert (rated.pricing, rated.customer_id) == (Pricing.DID_INCOMING, "c")
    assert rated.matched_prefix == "+33184000001"
    free_did = rater(dids=(DidBilling("+33184000002", "c"),))
    assert free_did.rate(call("+33184000002", 31, direction=Direction.INBOUND)).price == 0


def test_sums_are_made_of_rounded_call_amounts() -> None:
    r = rater(package={"pulse": Pulse(1, 1)})
    calls = [r.rate(call(duration=d)) for d in (1, 2, 3)]  # 0.00023, 0.00046, 0.00069
    assert sum(c.price_micros for c in calls) == 230 + 460 + 690
    assert sum((c.price for c in calls), D(0)) == D("0.00138")


def test_unknown_destination_and_account() -> None:
    r = rater()
    with pytest.raises(NoRate):
        r.rate(call("+8612345678"))
    with pytest.raises(UnknownAccount):
        r.rate(call(account_id="nobody"))
    with pytest.raises(UnknownAccount):
        r.rate(call("+33999", direction=Direction.INBOUND))


def test_setup_errors_name_the_culprit() -> None:
    s = setup()
    with pytest.raises(SetupError, match="unknown package"):
        Rater(RatingSetup(s.rate_tables, {}, s.customers, s.accounts))
    with pytest.raises(SetupError, match="more than 9 decimals"):
        rater(package={"overrides": {"+33": D("0.0000000001")}})
    with pytest.raises(SetupError, match="unknown customer"):
        Rater(RatingSetup(s.rate_tables, s.packages, {}, s.accounts))
