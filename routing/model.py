"""The routing contract: frozen values describing who can be reached and how.

`config/` builds these once per (re)load; every routing decision reads them and nothing else, so the
call path never touches YAML or a database. Names here are a contract with the config loader and the
proxy: keep them stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from routing.toll_fraud import NO_BLOCKLIST, Blocklist, RateLimit
from routing.trunks import TrunkChoice

RESERVED_EXTENSIONS = frozenset({"2000", "2020", "2222"})
"""Short codes every customer shares (support, conference, own voicemail); never an account extension."""


class ForwardKind(StrEnum):
    """The forwarding rules, named as in DOMAIN.md "Calls"."""

    PERMANENT = "permanent"
    UNREACHABLE = "unreachable"
    BUSY = "busy"
    NO_ANSWER = "no_answer"


class ShowCaller(StrEnum):
    """Which number a forwarded leg presents: the original caller's or the forwarding account's."""

    ORIGINAL = "original"
    ACCOUNT = "account"


class GroupStrategy(StrEnum):
    PARALLEL = "parallel"
    SEQUENTIAL = "sequential"


class DidKind(StrEnum):
    """Where an inbound public number leads."""

    ACCOUNT = "account"
    GROUP = "group"
    VOICEMAIL = "voicemail"
    HANGUP = "hangup"
    CONFERENCE = "conference"


@dataclass(frozen=True, slots=True)
class DialingRules:
    """How a customer's users dial: `0` national / `00` international in France, optional line prefix.

    ``premium_prefixes`` are E.164 prefixes refused to accounts that block premium numbers; when
    ``None`` the national default applies (``+338`` for France, i.e. 08xx; otherwise numbers
    phonenumbers classifies as premium rate).
    """

    country_code: int = 33
    national_prefix: str = "0"
    international_prefix: str = "00"
    outbound_prefix: str = ""
    premium_prefixes: tuple[str, ...] | None = None
    extra_premium: tuple[str, ...] = ()
    """The platform's premium prefixes of every country (proxy.toll_fraud.premium_prefixes), premium
    whatever the customer's own country says."""

    @classmethod
    def for_region(cls, region: str, *, outbound_prefix: str = "") -> DialingRules:
        """Rules for an ISO region (``"FR"``, ``"GB"``…) from phonenumbers' metadata."""
        import phonenumbers

        meta = phonenumbers.PhoneMetadata.metadata_for_region(region.upper())
        if meta is None:
            raise ValueError(f"unknown region {region!r}")
        return cls(
            country_code=int(meta.country_code),
            national_prefix=meta.national_prefix or "",
            international_prefix=meta.preferred_international_prefix or meta.international_prefix or "",
            outbound_prefix=outbound_prefix,
        )


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    """One destination of a forwarding rule or follow-me, as the account's user would dial it.

    ``number`` is an extension, a national/international/E.164 number, or ``"voicemail"`` (the
    forwarding account's own box). ``ring_seconds`` None means "until that destination gives up".
    ``start_after`` (seconds from the start of the rule) lets several targets ring at once; None
    means "when the previous target's ring time ends" (sequential staggering).
    """

    number: str
    ring_seconds: int | None = 20
    start_after: int | None = None


@dataclass(frozen=True, slots=True)
class ForwardRule:
    """A forwarding rule; ``delay_seconds`` is how long own phones ring before a no-answer forward."""

    kind: ForwardKind
    targets: tuple[ForwardTarget, ...]
    show_caller: ShowCaller = ShowCaller.ORIGINAL
    delay_seconds: int = 20
    voicemail_last_resort: bool = True


@dataclass(frozen=True, slots=True)
class FollowMe:
    """Follow-me: the targets ring (staggered), the account's own phones stay silent."""

    targets: tuple[ForwardTarget, ...]
    enabled: bool = True
    show_caller: ShowCaller = ShowCaller.ORIGINAL
    voicemail_last_resort: bool = True


@dataclass(frozen=True, slots=True)
class AccountRoute:
    """What routing needs to know about one account (a SIP line)."""

    account_id: str
    customer_id: str
    extension: str
    sip_username: str
    outgoing_number: str | None = None
    display_name: str = ""
    mobile: str | None = None
    voicemail: bool = False
    call_waiting: bool = True
    max_calls: int = 2
    block_premium: bool = False
    block_out_of_plan: bool = False
    rate_limits: tuple[RateLimit, ...] = ()
    """Calls this account may place per window (routing.toll_fraud), counted platform-wide."""
    blocklist: Blocklist = NO_BLOCKLIST
    """Outside destinations refused to this account: platform, customer and account prefixes."""
    forwards: tuple[ForwardRule, ...] = ()
    follow_me: FollowMe | None = None
    ring_seconds: int = 30
    """How long own phones ring when no no-answer rule says otherwise (then voicemail or 480)."""

    def forward(self, kind: ForwardKind) -> ForwardRule | None:
        for rule in self.forwards:
            if rule.kind is kind:
                return rule
        return None

    @property
    def presented_number(self) -> str:
        """The number this account shows: its outgoing DID, else its extension."""
        return self.outgoing_number or self.extension


@dataclass(frozen=True, slots=True)
class GroupMember:
    extension: str
    ring_seconds: int = 20


@dataclass(frozen=True, slots=True)
class Group:
    """A hunt group; ``fallback`` (dialed like a forward target) takes the call when nobody answers."""

    group_id: str
    customer_id: str
    members: tuple[GroupMember, ...]
    strategy: GroupStrategy = GroupStrategy.PARALLEL
    name: str = ""
    fallback: str | None = None


@dataclass(frozen=True, slots=True)
class Did:
    """An inbound public number. ``target``: extension (account, voicemail), group id, or empty."""

    number: str
    customer_id: str
    kind: DidKind
    target: str = ""


@dataclass(frozen=True, slots=True)
class Trunk:
    name: str
    uri: str = ""


@dataclass(frozen=True, slots=True)
class CustomerRoute:
    """A customer's routing view. Build with :meth:`build` to get the extension index."""

    customer_id: str
    dialing: DialingRules
    accounts: Mapping[str, AccountRoute]
    """By extension."""
    dids: tuple[Did, ...] = ()
    groups: Mapping[str, Group] = field(default_factory=dict)
    domains: tuple[str, ...] = ()
    trunk: str | None = None
    """Trunk name for this customer's outbound calls; None uses the platform trunk."""
    trunks: tuple[TrunkChoice, ...] = ()
    """An ordered set of trunks (failover) instead of ``trunk``; empty: ``trunk`` alone, or the platform's."""

    @classmethod
    def build(
        cls,
        customer_id: str,
        dialing: DialingRules,
        accounts: tuple[AccountRoute, ...] | list[AccountRoute],
        *,
        dids: tuple[Did, ...] | list[Did] = (),
        groups: tuple[Group, ...] | list[Group] = (),
        domains: tuple[str, ...] | list[str] = (),
        trunk: str | None = None,
        trunks: tuple[TrunkChoice, ...] = (),
    ) -> CustomerRoute:
        by_ext: dict[str, AccountRoute] = {}
        for acc in accounts:
            if acc.extension in RESERVED_EXTENSIONS:
                raise ValueError(f"extension {acc.extension} of {acc.account_id} is reserved")
            if acc.extension in by_ext:
                raise ValueError(f"extension {acc.extension} used twice in customer {customer_id}")
            by_ext[acc.extension] = acc
        return cls(
            customer_id=customer_id,
            dialing=dialing,
            accounts=MappingProxyType(by_ext),
            dids=tuple(dids),
            groups=MappingProxyType({g.group_id: g for g in groups}),
            domains=tuple(domains),
            trunk=trunk,
            trunks=tuple(trunks),
        )


@dataclass(frozen=True, slots=True)
class FeatureCode:
    """``set_prefix`` + number + ``#`` sets forwarding of ``kind``; ``clear_code`` clears it."""

    kind: ForwardKind
    set_prefix: str
    clear_code: str


DEFAULT_FEATURE_CODES: tuple[FeatureCode, ...] = (
    FeatureCode(ForwardKind.PERMANENT, "*21*", "#21#"),
    FeatureCode(ForwardKind.NO_ANSWER, "*61*", "#61#"),
    FeatureCode(ForwardKind.BUSY, "*67*", "#67#"),
    FeatureCode(ForwardKind.UNREACHABLE, "*62*", "#62#"),
)


@dataclass(frozen=True, slots=True)
class RoutingSetup:
    """Everything routing reads, with the platform-wide indexes. Build with :meth:`build`.

    ``support`` is what 2000 reaches: an E.164 number (on-net DID or via the trunk) or a SIP URI.
    ``media_uri`` is the media service (voicemail, conference) address.
    """

    customers: Mapping[str, CustomerRoute]
    dids: Mapping[str, Did]
    accounts: Mapping[str, AccountRoute]
    """By account id."""
    users: Mapping[tuple[str, str], AccountRoute]
    """By (domain, sip username)."""
    trunk: Trunk
    support: str
    media_uri: str
    feature_codes: tuple[FeatureCode, ...] = DEFAULT_FEATURE_CODES
    hop_limit: int = 5
    trunks: tuple[TrunkChoice, ...] = ()
    """The platform's ordered set of trunks (failover); empty: ``trunk`` alone."""

    @classmethod
    def build(
        cls,
        customers: tuple[CustomerRoute, ...] | list[CustomerRoute],
        *,
        trunk: Trunk,
        support: str,
        media_uri: str,
        feature_codes: tuple[FeatureCode, ...] = DEFAULT_FEATURE_CODES,
        hop_limit: int = 5,
        trunks: tuple[TrunkChoice, ...] = (),
    ) -> RoutingSetup:
        by_id: dict[str, CustomerRoute] = {}
        dids: dict[str, Did] = {}
        accounts: dict[str, AccountRoute] = {}
        users: dict[tuple[str, str], AccountRoute] = {}
        for cust in customers:
            if cust.customer_id in by_id:
                raise ValueError(f"customer {cust.customer_id} defined twice")
            by_id[cust.customer_id] = cust
            for did in cust.dids:
                if did.number in dids:
                    raise ValueError(f"DID {did.number} owned twice")
                dids[did.number] = did
            for acc in cust.accounts.values():
                if acc.account_id in accounts:
                    raise ValueError(f"account id {acc.account_id} used twice")
                accounts[acc.account_id] = acc
                for domain in cust.domains:
                    users[(domain.lower(), acc.sip_username)] = acc
        return cls(
            customers=MappingProxyType(by_id),
            dids=MappingProxyType(dids),
            accounts=MappingProxyType(accounts),
            users=MappingProxyType(users),
            trunk=trunk,
            support=support,
            media_uri=media_uri,
            feature_codes=tuple(feature_codes),
            hop_limit=hop_limit,
            trunks=tuple(trunks),
        )

    def find_user(self, domain: str, username: str) -> AccountRoute | None:
        return self.users.get((domain.lower(), username))
