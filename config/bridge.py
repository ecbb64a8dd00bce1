"""Bridges from a loaded Config to the views other floors are built from, one function each.

Why here: rating/ and routing/ must not know YAML; config/ knows both their models (floor 1) and its
own schema, so the translation lives in one place and runs once per (re)load, never per call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

import phonenumbers

from config.model import Config, account_id
from config.schema import Account, Customer, FollowMe, Forwarding, Package, RingStep, TrunkChoice
from config.values import Pulse
from rating import model as rm
from routing import model as ro
from routing.toll_fraud import Blocklist, RateLimit

# ------------------------------------------------------------------------------------------- rating


def _pulse(p: Pulse) -> rm.Pulse:
    return rm.Pulse(p.initial, p.step)


def _calling_code(region: str) -> str:
    return f"+{phonenumbers.country_code_for_region(region)}"


def rating_package(name: str, pkg: Package) -> rm.Package:
    zones = pkg.free_zones
    return rm.Package(
        name=name,
        rate_table=pkg.rate_table,
        markup_fixed=pkg.markup.fixed,
        markup_percent=pkg.markup.percent,
        pulse=_pulse(pkg.pulse),
        connect_fee=pkg.connect_fee,
        overrides=MappingProxyType(dict(pkg.overrides)),
        free_country_codes=frozenset(_calling_code(c) for c in zones.countries),
        free_prefixes=frozenset(zones.prefixes),
        free_cost_threshold=zones.max_cost,
        included_categories=frozenset(pkg.included_categories),
        free_minutes=pkg.free_minutes,
        monthly_fee=pkg.monthly_fee,
        setup_fee=pkg.setup_fee,
    )


def _package_of(customer: Customer, account: Account) -> str:
    name = account.package or customer.default_package
    assert name is not None, "load_config guarantees every account has a package"
    return name


def rating_setup(cfg: Config) -> rm.RatingSetup:
    """Everything rating.rater.Rater is built from (tariffs, packages, customers, accounts, DIDs)."""
    customers: dict[str, rm.CustomerBilling] = {}
    accounts: dict[str, rm.AccountBilling] = {}
    dids: dict[str, rm.DidBilling] = {}
    for cust in cfg.customers:
        bal = cust.balance
        customers[cust.id] = rm.CustomerBilling(
            id=cust.id,
            reference=cust.reference,
            currency=cust.currency,
            balance_mode=rm.BalanceMode(bal.mode.lower()),
            low_balance_threshold=bal.low_threshold if bal.low_threshold is not None else rm.ZERO,
            internal=cust.internal,
            daily_cap=bal.daily_cap,
        )
        for acc in cust.accounts:
            aid = account_id(cust.id, acc.extension)
            accounts[aid] = rm.AccountBilling(
                id=aid,
                customer_id=cust.id,
                package=_package_of(cust, acc),
                block_premium=acc.block_premium,
                block_out_of_plan=acc.block_out_of_plan,
                billing_start=acc.billing_start,
                billing_end=acc.billing_end,
                daily_cap=acc.daily_cap
                if acc.daily_cap is not None
                else cfg.proxy.toll_fraud.account_daily_cap,
            )
        for did in cust.dids:
            dids[did.number] = rm.DidBilling(
                number=did.number,
                customer_id=cust.id,
                setup_fee=did.setup_fee,
                monthly_fee=did.monthly_fee,
                incoming_rate_per_minute=did.incoming_rate,
                pulse=_pulse(did.pulse),
                billing_start=did.billing_start,
                billing_end=did.billing_end,
            )
    return rm.RatingSetup(
        rate_tables=cfg.rate_tables,
        packages=MappingProxyType({n: rating_package(n, p) for n, p in cfg.rating.packages.items()}),
        customers=MappingProxyType(customers),
        accounts=MappingProxyType(accounts),
        dids=MappingProxyType(dids),
        premium_categories=frozenset(cfg.rating.premium_categories),
        timezone=cfg.rating.billing.timezone,
    )


def initial_balances(cfg: Config) -> Mapping[str, Decimal]:
    """Customer id -> opening balance, for seeding the balance store on first start."""
    return MappingProxyType({c.id: c.balance.initial for c in cfg.customers})


# ------------------------------------------------------------------------------------------ routing


def _steps(steps: tuple[RingStep, ...]) -> tuple[ro.ForwardTarget, ...]:
    return tuple(ro.ForwardTarget(s.to, s.ring_time, s.delay) for s in steps)


def _forward_rules(acc: Account, fwd: Forwarding, default_delay: int) -> tuple[ro.ForwardRule, ...]:
    rules: list[ro.ForwardRule] = []
    simple = (
        (ro.ForwardKind.PERMANENT, fwd.permanent),
        (ro.ForwardKind.UNREACHABLE, fwd.unreachable),
        (ro.ForwardKind.BUSY, fwd.busy),
    )
    for kind, rule in simple:
        if rule is not None:
            rules.append(
                ro.ForwardRule(
                    kind,
                    (ro.ForwardTarget(rule.to, None),),
                    ro.ShowCaller(rule.show_caller),
                    voicemail_last_resort=acc.voicemail,
                )
            )
    na = fwd.no_answer
    if na is not None:
        rules.append(
            ro.ForwardRule(
                ro.ForwardKind.NO_ANSWER,
                _steps(na.targets),
                ro.ShowCaller(na.show_caller),
                delay_seconds=na.delay if na.delay is not None else default_delay,
                voicemail_last_resort=na.voicemail,
            )
        )
    return tuple(rules)


def _follow_me(fm: FollowMe | None) -> ro.FollowMe | None:
    if fm is None:
        return None
    return ro.FollowMe(_steps(fm.destinations), fm.enabled, ro.ShowCaller(fm.show_caller), fm.voicemail)


def _rate_limits(cfg: Config, acc: Account) -> tuple[RateLimit, ...]:
    """The account's call-rate limits, else the platform's defaults (proxy.toll_fraud)."""
    fraud = cfg.proxy.toll_fraud
    per_second = acc.calls_per_second if acc.calls_per_second is not None else fraud.calls_per_second
    per_minute = acc.calls_per_minute if acc.calls_per_minute is not None else fraud.calls_per_minute
    limits = [RateLimit(per_second, 1)] if per_second is not None else []
    if per_minute is not None:
        limits.append(RateLimit(per_minute, 60))
    return tuple(limits)


def account_route(cfg: Config, cust: Customer, acc: Account) -> ro.AccountRoute:
    ring = acc.ring_time if acc.ring_time is not None else cfg.proxy.no_answer_timeout
    fraud = cfg.proxy.toll_fraud
    return ro.AccountRoute(
        account_id=account_id(cust.id, acc.extension),
        customer_id=cust.id,
        extension=acc.extension,
        sip_username=acc.username,
        outgoing_number=acc.outgoing_number,
        display_name=acc.display_name or "",
        mobile=acc.mobile,
        voicemail=acc.voicemail,
        call_waiting=acc.call_waiting,
        max_calls=acc.max_calls,
        block_premium=acc.block_premium,
        block_out_of_plan=acc.block_out_of_plan,
        rate_limits=_rate_limits(cfg, acc),
        blocklist=Blocklist.layered(
            (fraud.blocked_prefixes, fraud.allowed_prefixes),
            (cust.blocked_prefixes, cust.allowed_prefixes),
            (acc.blocked_prefixes, acc.allowed_prefixes),
        ),
        forwards=_forward_rules(acc, acc.forwarding, cfg.proxy.no_answer_timeout),
        follow_me=_follow_me(acc.follow_me),
        ring_seconds=ring,
    )


def customer_route(cfg: Config, cust: Customer) -> ro.CustomerRoute:
    d = cust.dialing
    base = ro.DialingRules.for_region(cust.country)
    dialing = ro.DialingRules(
        country_code=base.country_code,
        national_prefix=d.national_prefix or "",
        international_prefix=d.international_prefix,
        outbound_prefix=d.outbound_prefix or "",
        premium_prefixes=d.premium_prefixes,
        extra_premium=tuple(p for ps in cfg.proxy.toll_fraud.premium_prefixes.values() for p in ps),
    )
    groups = [
        ro.Group(
            group_id=name,
            customer_id=cust.id,
            members=tuple(ro.GroupMember(m.extension, m.ring_time) for m in g.members),
            strategy=ro.GroupStrategy(g.strategy),
            name=g.name or name,
            fallback=g.fallback,
        )
        for name, g in cust.groups.items()
    ]
    dids = [ro.Did(did.number, cust.id, ro.DidKind(did.to.kind), did.to.target or "") for did in cust.dids]
    return ro.CustomerRoute.build(
        cust.id,
        dialing,
        [account_route(cfg, cust, acc) for acc in cust.accounts],
        dids=dids,
        groups=groups,
        domains=cust.domains,
        trunk=cust.trunk,
        trunks=_choices(cust.trunks),
    )


def _choices(choices: tuple[TrunkChoice, ...] | None) -> tuple[ro.TrunkChoice, ...]:
    return tuple(ro.TrunkChoice(c.trunk, c.priority, c.weight) for c in choices or ())


def _trunk(cfg: Config) -> ro.Trunk:
    listed = cfg.proxy.outbound_trunks
    name = cfg.proxy.outbound_trunk or (listed[0].trunk if listed else next(iter(cfg.trunks), None))
    if name is None:
        return ro.Trunk("", "")
    t = cfg.trunks[name]
    return ro.Trunk(name, f"sip:{t.address};transport={t.transport}")


def routing_setup(cfg: Config) -> ro.RoutingSetup:
    """Everything routing decisions read: customers, extensions, DIDs, groups, codes, trunk."""
    codes = cfg.proxy.feature_codes
    feature_codes = tuple(
        ro.FeatureCode(kind, fc.set[:-2], fc.clear)  # "*21*X#" -> prefix "*21*"; routing expects number + "#"
        for kind, fc in (
            (ro.ForwardKind.PERMANENT, codes.permanent),
            (ro.ForwardKind.NO_ANSWER, codes.no_answer),
            (ro.ForwardKind.BUSY, codes.busy),
            (ro.ForwardKind.UNREACHABLE, codes.unreachable),
        )
    )
    media = cfg.proxy.media_service
    return ro.RoutingSetup.build(
        [customer_route(cfg, c) for c in cfg.customers],
        trunk=_trunk(cfg),
        support=cfg.proxy.support_destination or "",
        media_uri=f"sip:{media}" if media is not None else "",
        feature_codes=feature_codes,
        hop_limit=cfg.proxy.max_forward_hops,
        trunks=_choices(cfg.proxy.outbound_trunks),
    )


# ---------------------------------------------------------------------------------------- registrar


@dataclass(frozen=True, slots=True)
class Credentials:
    """What digest authentication of one login needs. ``ha1`` = md5(username:realm:password), hex;
    ``password`` is kept (None when only ha1 was configured) for other digest algorithms."""

    account_id: str
    customer_id: str
    domain: str
    username: str
    realm: str
    ha1: str
    password: str | None
    display_name: str


def ha1_md5(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()


def registrar_view(cfg: Config) -> Mapping[tuple[str, str], Credentials]:
    """(domain, SIP username) -> Credentials. The realm is registrar.realm, else the domain itself."""
    realm_cfg = cfg.registrar.realm
    out: dict[tuple[str, str], Credentials] = {}
    for (domain, username), entry in cfg.logins.items():
        acc = entry.account
        realm = realm_cfg or domain
        ha1 = acc.ha1.lower() if acc.ha1 is not None else ha1_md5(username, realm, acc.password or "")
        out[(domain, username)] = Credentials(
            entry.id, entry.customer.id, domain, username, realm, ha1, acc.password, acc.display_name or ""
        )
    return MappingProxyType(out)
