"""The YAML schema: pydantic v2 models, strict about keys (a typo is an error), frozen once validated.

This file is the operator's interface; docs/configuration.md describes every key. Rules of thumb:
- every model forbids unknown keys and is frozen; lists become tuples, maps become read-only mappings;
- defaults are the embedded single-box setup (in-memory location, SQLite CDRs, GSM feature codes);
- checks that need only one object live here (model validators); checks across objects (references,
  duplicates, files) live in config/semantics.py so that *all* of them are reported at once.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from types import MappingProxyType
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    model_validator,
)

from config.values import (
    E164,
    Amount,
    DestinationValue,
    Dialable,
    DialableOrUri,
    Digits,
    Domain,
    Duration,
    Extension,
    Fee,
    HostPort,
    HostPortValue,
    ListenAddress,
    Percent,
    PerMinute,
    Prefix,
    Pulse,
    PulseValue,
    SipAddress,
    SipUser,
    Text,
)
from routing.toll_fraud import SATELLITE_PREFIXES

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HA1 = re.compile(r"^[0-9a-fA-F]{32}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{value!r} is not a name (letters, digits, '_', '.', '-'; up to 64)")
    return value


def _country(value: Any) -> str:
    text = str(value).upper() if isinstance(value, str) else ""
    if len(text) != 2 or phonenumbers.country_code_for_region(text) == 0:
        raise ValueError(f"{value!r} is not an ISO 3166 country code with a telephone plan (e.g. FR)")
    return text


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise ValueError(f"{value!r} is not an ISO 4217 currency code (e.g. EUR)")
    return value


Name = Annotated[str, PlainValidator(_name)]
Country = Annotated[str, PlainValidator(_country)]
Currency = Annotated[str, PlainValidator(_currency)]


def _min_len(n: int) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) < n:
            raise ValueError(f"must be at least {n} characters long")
        return value

    return AfterValidator(check)


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network (192.0.2.10, 192.0.2.0/24)") from None


Network = Annotated[Text, AfterValidator(_network)]

_SOURCE_V4_PORT = re.compile(r"^([0-9.]+):([0-9]{1,5})$")
_SOURCE_V6_PORT = re.compile(r"^\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})$")


def _source(value: str) -> str:
    """A trunk's inbound source: a network (``192.0.2.0/24``, ``192.0.2.10``), or one address and port
    (``192.0.2.10:5090``, ``[2001:db8::1]:5090``). Canonical forms: ``192.0.2.10/32``,
    ``192.0.2.10:5090``, ``[2001:db8::1]:5090``."""
    text = value.strip()
    m = _SOURCE_V4_PORT.match(text) or _SOURCE_V6_PORT.match(text)
    if m is None:
        try:
            return _network(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address, network or address:port "
                "(192.0.2.10, 192.0.2.0/24, 192.0.2.10:5090, [2001:db8::1]:5090)"
            ) from None
    try:
        ip = ipaddress.ip_address(m.group(1))
    except ValueError:
        raise ValueError(f"{value!r}: {m.group(1)!r} is not an IP address") from None
    port = int(m.group(2))
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: port {port} is not between 1 and 65535")
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


InboundSource = Annotated[Text, AfterValidator(_source)]


def source_address(source: str) -> tuple[str, int] | None:
    """A canonical inbound source's one address and port; None for a network (``x/n``)."""
    if "/" in source:
        return None
    host, _, port = source.rpartition(":")
    return host.strip("[]"), int(port)


def _empty_map() -> Mapping[Any, Any]:
    return MappingProxyType({})


def _frozen_map(value: dict[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(value)


_FROZEN = AfterValidator(_frozen_map)
_NO_ENTRIES: Any = Field(default_factory=_empty_map)


class Strict(BaseModel):
    """Base of every section: unknown keys are errors and validated objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)


# --------------------------------------------------------------------------------------------- server
class Listen(Strict):
    udp: tuple[ListenAddress, ...] = (HostPort("0.0.0.0", 5060),)
    tcp: tuple[ListenAddress, ...] = (HostPort("0.0.0.0", 5070),)


class Limits(Strict):
    max_message_size: int = Field(65535, ge=1024, le=1 << 20)
    max_tcp_connections_per_ip: int = Field(64, ge=1)
    tcp_idle_timeout: Duration = Field(600, ge=1)
    # inbound TCP connections for the whole server, split evenly between workers; each worker's share
    # is kept below its RLIMIT_NOFILE less tcp_reserved_descriptors (None: that limit alone)
    max_tcp_connections: int | None = Field(None, ge=1)
    tcp_reserved_descriptors: int = Field(256, ge=16)
    tcp_message_timeout: Duration = Field(10, ge=1)  # to finish a message once begun (slowloris)
    tcp_min_byte_rate: int = Field(100, ge=0)  # bytes/s of a message in progress (trickle); 0: off
    # server transactions kept at most (~2-3 KB each once lingering); a full table ends its oldest
    # lingering one for a new request, and answers a stateless 503 only when all are in progress
    max_server_transactions: int = Field(65_536, ge=100)
    # bytes of kernel receive queue asked for each UDP socket (Linux doubles it, caps it at
    # net.core.rmem_max): shallow, so an overloaded server drops stale datagrams instead of queueing them
    udp_receive_buffer: int = Field(524_288, ge=65_536, le=1 << 28)


class TlsSection(Strict):
    """SIP over TLS (docs/transports.md): listeners, certificate, handshake. Relative files are under
    ``state_dir``; ``sipcore reload`` reloads the pair (new connections use it)."""

    listen: tuple[ListenAddress, ...] = (HostPort("0.0.0.0", 5061),)
    cert_file: Text
    key_file: Text
    self_signed: bool = False  # both files missing: create a demo pair (openssl) instead of failing
    client_ca_file: Text | None = None  # clients must present a certificate this CA signed
    min_version: Literal["1.2", "1.3"] = "1.2"
    ciphers: Text | None = None  # OpenSSL TLS 1.2 cipher string; None: forward-secret AEAD suites
    handshake_timeout: Duration = Field(10, ge=1, le=120)


class WebSocketSection(Strict):
    """SIP over WebSocket (RFC 7118): plain ``listen`` and secure ``tls_listen`` (server.tls's pair)."""

    listen: tuple[ListenAddress, ...] = ()
    tls_listen: tuple[ListenAddress, ...] = ()


class LogSettings(Strict):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"
    calls: bool = False  # call_started / call_ended at info (debug otherwise): docs/operations.md


class AdminSection(Strict):
    """The admin API (HTTP/JSON, docs/operations.md). Loopback only unless a bearer token guards it:
    a non-loopback ``listen`` without ``token_file`` is refused."""

    listen: HostPortValue = HostPort("127.0.0.1", 9091)
    token_file: Text | None = None

    @model_validator(mode="after")
    def _guarded(self) -> AdminSection:
        if self.token_file is None and not is_loopback_host(self.listen.host):
            raise ValueError(
                f"admin.listen {self.listen} is not a loopback address: set admin.token_file "
                "(a bearer token every request must carry) or listen on 127.0.0.1"
            )
        return self


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (an admin listener open without a token only there)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


class ClusterSection(Strict):
    """Several hosts sharing one Redis location store and one PostgreSQL (docs/scale-out.md): bindings
    registered here carry a route through ``advertise``, and the ``peers`` may send calls through us
    to our phones (transit: not authenticated, not counted here). Each peer given as one address is
    probed with OPTIONS: a host that stops answering is rung through no more until it answers again."""

    advertise: SipAddress  # where the other hosts reach this one (one of its listening addresses)
    transport: Literal["udp", "tcp"] = "udp"  # how they send to it
    # the other hosts' addresses (networks allowed; address:port: a host reached on another port than
    # our advertise's, trusted from any port)
    peers: tuple[InboundSource, ...] = ()
    # Kamailio's dispatcher pings only when told (ds_ping_interval 0) and takes one failure
    # (ds_probing_threshold 1): a platform always wants the probes, and two failures in a row keep one
    # lost datagram from taking a host out (a dead one is known within 10-15 s)
    probe_interval: Duration | None = Field(5, ge=1, le=3600)  # OPTIONS to each peer; None: off
    probe_failures: int = Field(2, ge=1, le=100)  # unanswered probes in a row that mark a peer down

    @property
    def networks(self) -> tuple[str, ...]:
        """``peers`` as networks (a port dropped): who may send transit, never banned."""
        addresses = [(p, source_address(p)) for p in self.peers]
        return tuple(p if a is None else str(ipaddress.ip_network(a[0])) for p, a in addresses)


class ServerSection(Strict):
    listen: Listen = Listen()
    tls: TlsSection | None = None
    websocket: WebSocketSection | None = None
    advertised_address: SipAddress | None = None
    local_addresses: tuple[Domain, ...] = ()
    limits: Limits = Limits()
    workers: int = Field(1, ge=1, le=64)
    # with workers: each has its own socket per UDP address, the kernel steering datagrams to the
    # owner of their Call-ID (sipcore.steering); false: one shared socket, whoever is free reads
    udp_steering: bool = True
    metrics: HostPortValue | None = HostPort("127.0.0.1", 9090)
    admin: AdminSection | None = AdminSection()  # null: no admin API
    log: LogSettings = LogSettings()
    state_dir: Text = "var"
    # SIGTERM: new calls refused (503), calls in progress given this long to end, then BYE both ways
    drain_timeout: Duration = Field(30, ge=0, le=3600)
    cluster: ClusterSection | None = None  # several hosts, one platform (docs/scale-out.md)

    @model_validator(mode="after")
    def _wss_needs_tls(self) -> ServerSection:
        if self.websocket is not None and self.websocket.tls_listen and self.tls is None:
            raise ValueError("server.websocket.tls_listen needs server.tls (its certificate and key)")
        return self


# ------------------------------------------------------------------------------------------ registrar
class Expires(Strict):
    min: Duration = Field(60, ge=1)
    max: Duration = Field(3600, ge=1)
    default: Duration = Field(3600, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Expires:
        if not self.min <= self.default <= self.max:
            raise ValueError(f"need min <= default <= max, got {self.min} / {self.default} / {self.max}")
        return self


class MemoryLocation(Strict):
    backend: Literal["memory"]
    state_file: Text | None = "location.msgpack"


class RedisLocation(Strict):
    backend: Literal["redis"]
    url: Text = "redis://127.0.0.1:6379/0"
    key_prefix: Text = "sipcore:"
    # a deadline per location operation; past it, or Redis unreachable, the local fallback serves
    timeout: float = Field(1.0, gt=0, le=30)
    retry_interval: float = Field(2.0, gt=0, le=300)  # first probe of Redis after it went away
    # Redis Sentinel: "host:port" of each sentinel (the master is discovered; url gives password/db)
    sentinels: tuple[Text, ...] = ()
    sentinel_master: Text = "mymaster"


DEFAULT_SCANNERS = ("friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sundayddr", "iwar", "sipbomber")


class RateLimit(Strict):
    """Per-source request-rate limit (Kamailio's pike): over ``requests`` messages within ``window``
    seconds, the source is banned for ``ban_time`` (registrar/pike.py)."""

    enabled: bool = True
    requests: int = Field(200, ge=1)
    window: Duration = Field(2, ge=1)
    ban_time: Duration = Field(300, ge=1)


_NFT_SET = re.compile(r"^(ip|ip6|inet) [A-Za-z_][A-Za-z0-9_.-]* [A-Za-z_][A-Za-z0-9_.-]*$")


def _nft_set(value: str) -> str:
    if not _NFT_SET.match(value):
        raise ValueError(
            f"{value!r} is not an nftables set as 'family table set' (e.g. 'inet sipcore banned4')"
        )
    return value


NftSet = Annotated[Text, AfterValidator(_nft_set)]


class Guard(Strict):
    enabled: bool = True
    failure_threshold: int = Field(10, ge=1)
    window: Duration = Field(60, ge=1)
    ban_time: Duration = Field(600, ge=1)
    # the sliding slow window (fail2ban's findtime / maxretry): slow guessing; 0 turns it off
    slow_window: Duration = Field(600, ge=1)
    slow_threshold: int = Field(5, ge=0, le=100)
    user_failure_threshold: int = Field(30, ge=1)  # per username, across sources: bans the sources
    refuse_user_agents: tuple[Text, ...] = DEFAULT_SCANNERS
    whitelist: tuple[Network, ...] = ("127.0.0.0/8", "::1/128")  # never banned
    rate_limit: RateLimit = RateLimit()
    # bans mirrored into nftables sets (IPv4 addresses; IPv6 /64 networks: a set with flags interval)
    nft_set: NftSet | None = None
    nft_set6: NftSet | None = None


class RegistrarSection(Strict):
    realm: Domain | None = None
    nonce_secret: Annotated[Text, _min_len(16)] | None = None
    nonce_secret_file: Text | None = None
    nonce_lifetime: Duration = Field(300, ge=10)
    expires: Expires = Expires()
    max_contacts: int = Field(5, ge=1, le=100)
    max_contacts_policy: Literal["reject", "drop_oldest"] = "drop_oldest"
    expires_jitter_percent: int = Field(0, ge=0, le=50)
    # Order of the WWW-Authenticate challenges. Many phones (and SIPp) read only the first one and know
    # only MD5, so MD5 comes first by default; RFC 8760 clients that read all can still pick SHA-256.
    digest_algorithms: tuple[Literal["MD5", "SHA-256"], ...] = Field(("MD5", "SHA-256"), min_length=1)
    # Clients that abort on a challenge with an algorithm they do not know, even after one they could
    # answer (baresip 1.0 fails with ENOSYS, SIP.js 0.21 aborts on a SHA-256 challenge): User-Agent
    # substrings, case-insensitive, challenged MD5 only.
    md5_only_user_agents: tuple[Text, ...] = ("baresip", "SIP.js")
    location: Annotated[MemoryLocation | RedisLocation, Field(discriminator="backend")] = MemoryLocation(
        backend="memory"
    )
    guard: Guard = Guard()

    @model_validator(mode="after")
    def _one_secret(self) -> RegistrarSection:
        if self.nonce_secret is not None and self.nonce_secret_file is not None:
            raise ValueError("give nonce_secret or nonce_secret_file, not both")
        return self


# ---------------------------------------------------------------------------------------------- proxy
class FeatureCode(Strict):
    """``set`` ends in ``X#``: the user dials the prefix, the target number, then ``#``."""

    set: Text
    clear: Text

    @model_validator(mode="after")
    def _shape(self) -> FeatureCode:
        if not re.fullmatch(r"[*#][0-9*#]*X#", self.set):
            raise ValueError(f"set code {self.set!r} must be * or #, digits, then X# (e.g. *21*X#)")
        if not re.fullmatch(r"[*#][0-9*#]*", self.clear):
            raise ValueError(f"clear code {self.clear!r} must start with * or # (e.g. #21#)")
        return self


class CallJournal(Strict):
    """Answered calls kept on disk until their CDR is durable (docs/cdr.md "Calls across a crash")."""

    enabled: bool = True
    orphan_timeout: Duration = Field(3600, ge=1)  # a restored call no request of reaches us: ended
    # the records are written before the replies that depend on them leave (a killed process loses
    # nothing); fdatasync'd too: before those replies (reply), in a thread right after (background), never (off)
    fsync: Literal["reply", "background", "off"] = "background"


class FeatureCodes(Strict):
    permanent: FeatureCode = FeatureCode(set="*21*X#", clear="#21#")
    no_answer: FeatureCode = FeatureCode(set="*61*X#", clear="#61#")
    busy: FeatureCode = FeatureCode(set="*67*X#", clear="#67#")
    unreachable: FeatureCode = FeatureCode(set="*62*X#", clear="#62#")

    @model_validator(mode="after")
    def _distinct(self) -> FeatureCodes:
        rules = (self.permanent, self.no_answer, self.busy, self.unreachable)
        codes = [c for fc in rules for c in (fc.set, fc.clear)]
        dup = sorted({c for c in codes if codes.count(c) > 1})
        if dup:
            raise ValueError(f"feature codes used twice: {', '.join(dup)}")
        return self


class TrunkChoice(Strict):
    """One trunk of an ordered set: the lowest ``priority`` is tried first; trunks of equal priority
    share calls in proportion to ``weight``; the next one is tried on 5xx, 408 or no answer."""

    trunk: Name
    priority: int = Field(1, ge=0, le=1000)
    weight: int = Field(1, ge=1, le=1000)


def _distinct_trunks(choices: tuple[TrunkChoice, ...] | None) -> tuple[TrunkChoice, ...] | None:
    if choices is not None:
        names = [c.trunk for c in choices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"trunk listed twice: {', '.join(dup)}")
    return choices


class TollFraud(Strict):
    """Platform-wide limits against toll fraud (docs/security.md "Toll fraud"); accounts and customers
    add their own (``blocked_prefixes``, ``allowed_prefixes``, ``calls_per_second`` ...)."""

    blocked_prefixes: tuple[Prefix, ...] = SATELLITE_PREFIXES  # refused to every account
    allowed_prefixes: tuple[Prefix, ...] = ()  # exceptions carved out of blocked ones (longest wins)
    premium_prefixes: dict[Country, tuple[Prefix, ...]] = {}  # region -> prefixes, for block_premium
    calls_per_second: int | None = Field(None, ge=1, le=100_000)  # default for accounts
    calls_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    account_daily_cap: Fee | None = None  # default for accounts


class ProxySection(Strict):
    max_call_duration: Duration = Field(14400, ge=1)
    no_answer_timeout: Duration = Field(20, ge=1)
    max_forward_hops: int = Field(5, ge=1, le=20)
    media_service: SipAddress | None = HostPort("127.0.0.1", 5080)
    support_destination: DialableOrUri | None = None  # number (on-net DID or via trunk) or sip: URI
    outbound_trunk: Name | None = None
    outbound_trunks: Annotated[tuple[TrunkChoice, ...], AfterValidator(_distinct_trunks)] | None = Field(
        None, min_length=1
    )  # an ordered set with failover (docs/proxy.md "Trunks")
    feature_codes: FeatureCodes = FeatureCodes()
    toll_fraud: TollFraud = TollFraud()
    call_journal: CallJournal = CallJournal()

    @model_validator(mode="after")
    def _one_trunk_form(self) -> ProxySection:
        if self.outbound_trunk is not None and self.outbound_trunks is not None:
            raise ValueError("give outbound_trunk or outbound_trunks, not both")
        return self


# --------------------------------------------------------------------------------------------- trunks
NumberFormat = Literal["e164", "e164_no_plus", "national", "international_00"]


class CallerIdRules(Strict):
    """The caller number a trunk is shown (From and P-Asserted-Identity user part)."""

    format: NumberFormat | None = None  # None: the trunk's number_format
    default: E164 | None = None  # shown when the caller has no public number (an extension, anonymous)
    anonymous_allowed: bool = True  # false: calls withholding their identity (Privacy: id) avoid it


class TrunkRegistration(Strict):
    """Outbound registration to a carrier that requires it (REGISTER with digest, refreshed)."""

    username: Text
    password: Text
    expires: Duration = Field(600, ge=2, le=86400)
    domain: Domain | None = None  # Request-URI and AOR domain; default: the trunk's host
    retry_max: Duration = Field(300, ge=1, le=3600)  # backoff after failures: 1, 2, 4 ... up to this


class TrunkTls(Strict):
    """How the carrier's TLS certificate is checked: against ``ca_file`` (else the system CAs) with
    its name checked against ``server_name`` (SNI; default the address's host), or pinned by SHA-256."""

    ca_file: Text | None = None
    fingerprint: (
        Annotated[str, StringConstraints(pattern=r"^([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$")] | None
    ) = None
    server_name: Text | None = None
    verify: bool = True  # false: no check at all (tests only; logged at start)


class Trunk(Strict):
    address: SipAddress
    transport: Literal["udp", "tcp", "tls"] = "udp"
    tls: TrunkTls | None = None
    username: Text | None = None
    password: Text | None = None
    realm: Text | None = None
    inbound_sources: tuple[InboundSource, ...] = ()
    trusted: bool = True  # RFC 3325 trust domain: its identity headers kept, ours sent under Privacy: id
    number_format: NumberFormat = "e164"  # Request-URI and To user of calls sent to it
    country: Country | None = None  # what "national" means (needed by the national format)
    caller_id: CallerIdRules = CallerIdRules()
    probe_interval: Duration | None = Field(None, ge=1, le=3600)  # OPTIONS health probes; None: off
    probe_failures: int = Field(3, ge=1, le=100)  # failed probes in a row that take it out of rotation
    failover_timeout: Duration = Field(5, ge=1, le=32)  # no answer at all to an INVITE: try the next one
    registration: TrunkRegistration | None = Field(None, alias="register")  # written `register:`

    @model_validator(mode="after")
    def _credentials(self) -> Trunk:
        if (self.username is None) != (self.password is None):
            raise ValueError("trunk credentials need both username and password")
        if self.country is None and "national" in (self.number_format, self.caller_id.format):
            raise ValueError("the national number format needs the trunk's country (e.g. country: FR)")
        return self


# ------------------------------------------------------------------------------------------------ cdr
class SqliteCdr(Strict):
    backend: Literal["sqlite"]
    path: Text = "cdr.sqlite3"
    spool_dir: Text = "spool"
    batch_size: int = Field(1000, ge=1, le=100_000)


class PostgresCdr(Strict):
    backend: Literal["postgresql"]
    dsn: Text
    spool_dir: Text = "spool"
    batch_size: int = Field(1000, ge=1, le=100_000)


CdrSection = Annotated[SqliteCdr | PostgresCdr, Field(discriminator="backend")]


# --------------------------------------------------------------------------------------------- rating
class Markup(Strict):
    """Sell price per minute = (cost + fixed) x (1 + percent / 100)."""

    fixed: PerMinute = Decimal(0)
    percent: Percent = Decimal(0)


class FreeZones(Strict):
    countries: tuple[Country, ...] = ()
    prefixes: tuple[Prefix, ...] = ()
    max_cost: PerMinute | None = None


class Package(Strict):
    rate_table: Name
    markup: Markup = Markup()
    pulse: PulseValue = Pulse(60, 60)
    connect_fee: Fee = Decimal(0)
    overrides: Annotated[Mapping[Prefix, PerMinute], _FROZEN] = _NO_ENTRIES
    free_zones: FreeZones = FreeZones()
    included_categories: tuple[Annotated[Text, AfterValidator(str.lower)], ...] = ()
    free_minutes: int = Field(0, ge=0)
    monthly_fee: Fee = Decimal(0)
    setup_fee: Fee = Decimal(0)


class MemoryCounters(Strict):
    """Balances, daily spend and free minutes in the process (one process: `make run` needs no Redis)."""

    backend: Literal["memory"]


class RedisCounters(Strict):
    """Shared by every process through Redis; authorisation reads a cache refreshed every interval."""

    backend: Literal["redis"]
    url: Text = "redis://127.0.0.1:6379/0"
    key_prefix: Text = "sipcore:rating:"
    refresh_interval: float = Field(1.0, gt=0, le=60)
    # Redis unreachable: what a HARD (prepaid) customer may still spend per process (0: priced calls refused)
    outage_reserve: Fee = Decimal(0)
    sentinels: tuple[Text, ...] = ()  # Redis Sentinel "host:port" list (the master is discovered)
    sentinel_master: Text = "mymaster"


class SqliteLedgerSection(Strict):
    """The ledger in a SQLite file of this host (one writer: the host's processes)."""

    backend: Literal["sqlite"]
    path: Text = "ledger.sqlite3"  # under server.state_dir


def _postgres_dsn(value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"{value!r} is not a PostgreSQL DSN (postgresql://user@host/db[?schema=NAME])")
    return value


class PostgresLedgerSection(Strict):
    """The ledger in PostgreSQL, shared by every host of a platform (docs/scale-out.md)."""

    backend: Literal["postgresql"]
    dsn: Annotated[Text, AfterValidator(_postgres_dsn)]  # postgresql://user@host/db[?schema=NAME]


LedgerSection = Annotated[SqliteLedgerSection | PostgresLedgerSection, Field(discriminator="backend")]


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name like Europe/Paris)") from None
    return value


class BillingCycle(Strict):
    """When the billing run posts monthly and setup fees (docs/rating.md "Billing run")."""

    day: int = Field(1, ge=1, le=28)  # day of the month fees are charged (28 at most: every month has it)
    timezone: Annotated[Text, AfterValidator(_timezone)] = "UTC"  # the operator's: billing dates, statements
    catch_up_months: int = Field(3, ge=0, le=24)  # months before the current one a start may still bill


class RatingSection(Strict):
    billing: BillingCycle = Field(default_factory=BillingCycle)
    premium_categories: tuple[Annotated[Text, AfterValidator(str.lower)], ...] = ("premium",)
    rate_tables: Annotated[Mapping[Name, Text], _FROZEN] = _NO_ENTRIES
    packages: Annotated[Mapping[Name, Package], _FROZEN] = _NO_ENTRIES
    counters: Annotated[MemoryCounters | RedisCounters, Field(discriminator="backend")] = MemoryCounters(
        backend="memory"
    )
    # not the CDR store's dsn by default: a server upgraded with `cdr: postgresql` would start from an
    # empty ledger and forget every payment; sharing the ledger is chosen explicitly
    ledger: LedgerSection = SqliteLedgerSection(backend="sqlite")


# ------------------------------------------------------------------------------------------ customers
class Dialing(Strict):
    national_prefix: Digits | None = "0"
    international_prefix: Digits = "00"
    outbound_prefix: Digits | None = None
    premium_prefixes: tuple[Prefix, ...] | None = None  # None: the country's default (08 in France)


class Balance(Strict):
    mode: Literal["SOFT", "HARD"] = "SOFT"
    initial: Amount = Decimal(0)
    low_threshold: Amount | None = None
    daily_cap: Fee | None = None


class Did(Strict):
    number: E164
    to: DestinationValue
    setup_fee: Fee = Decimal(0)
    monthly_fee: Fee = Decimal(0)
    incoming_rate: PerMinute = Decimal(0)
    pulse: PulseValue = Pulse(60, 60)
    billing_start: date | None = None
    billing_end: date | None = None


class GroupMember(Strict):
    extension: Extension
    ring_time: Duration = Field(20, ge=1)


class Group(Strict):
    name: Text | None = None
    strategy: Literal["parallel", "sequential"] = "parallel"
    members: tuple[GroupMember, ...] = Field(min_length=1)
    fallback: Dialable | None = None  # dialed like a forward target when nobody answers


ShowCaller = Literal["original", "account"]


class ForwardTarget(Strict):
    to: Dialable
    show_caller: ShowCaller = "original"


class RingStep(Strict):
    """One staggered target: rings ``ring_time`` s, starting ``delay`` s after the rule fires
    (default: when the previous target's ring time ends, i.e. one after the other)."""

    to: Dialable
    delay: Duration | None = None
    ring_time: Duration = Field(20, ge=1)


class NoAnswerForward(Strict):
    delay: Duration | None = Field(None, ge=1)  # None: proxy.no_answer_timeout
    targets: tuple[RingStep, ...] = ()
    voicemail: bool = False
    show_caller: ShowCaller = "original"

    @model_validator(mode="after")
    def _something(self) -> NoAnswerForward:
        if not self.targets and not self.voicemail:
            raise ValueError("no_answer forwarding needs targets or voicemail: true")
        return self


class Forwarding(Strict):
    permanent: ForwardTarget | None = None
    busy: ForwardTarget | None = None
    unreachable: ForwardTarget | None = None
    no_answer: NoAnswerForward | None = None


class FollowMe(Strict):
    enabled: bool = True
    destinations: tuple[RingStep, ...] = Field(min_length=1)
    voicemail: bool = False
    show_caller: ShowCaller = "original"


class Account(Strict):
    extension: Extension
    username: SipUser
    password: Annotated[Text, _min_len(1)] | None = None
    ha1: Text | None = None
    display_name: Text | None = None
    outgoing_number: E164 | None = None
    mobile: E164 | None = None
    voicemail: bool = False
    voicemail_pin: Digits | None = None  # asked on 2222 when set
    email: Text | None = None  # a deposit is e-mailed here (media.smtp) with the WAV attached
    call_waiting: bool = True
    max_calls: int = Field(2, ge=1, le=100_000)
    package: Name | None = None
    block_out_of_plan: bool = False
    block_premium: bool = False
    blocked_prefixes: tuple[Prefix, ...] = ()
    allowed_prefixes: tuple[Prefix, ...] = ()
    calls_per_second: int | None = Field(None, ge=1, le=100_000)  # None: proxy.toll_fraud's
    calls_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    daily_cap: Fee | None = None  # None: proxy.toll_fraud.account_daily_cap
    billing_start: date | None = None
    billing_end: date | None = None
    ring_time: Duration | None = Field(None, ge=1)  # own phones ring; None: proxy.no_answer_timeout
    forwarding: Forwarding = Forwarding()
    follow_me: FollowMe | None = None

    @model_validator(mode="after")
    def _secret(self) -> Account:
        if (self.password is None) == (self.ha1 is None):
            raise ValueError("an account needs exactly one of password or ha1")
        if self.ha1 is not None and not _HA1.match(self.ha1):
            raise ValueError("ha1 must be 32 hex digits: md5(username:realm:password)")
        return self


class Customer(Strict):
    id: Name
    name: Text
    reference: Text
    country: Country
    dialing: Dialing = Dialing()
    domains: tuple[Domain, ...] = Field(min_length=1)
    currency: Currency = "EUR"
    balance: Balance = Balance()
    internal: bool = False
    default_package: Name | None = None
    trunk: Name | None = None  # None: the platform's proxy.outbound_trunk(s)
    trunks: Annotated[tuple[TrunkChoice, ...], AfterValidator(_distinct_trunks)] | None = Field(
        None, min_length=1
    )  # an ordered set with failover instead of one trunk
    dids: tuple[Did, ...] = ()
    groups: Annotated[Mapping[Name, Group], _FROZEN] = _NO_ENTRIES
    accounts: tuple[Account, ...] = ()
    conference_pins: Annotated[Mapping[Digits, Name], _FROZEN] = _NO_ENTRIES  # 2020 asks: PIN -> room
    blocked_prefixes: tuple[Prefix, ...] = ()  # added to the platform's for its accounts
    allowed_prefixes: tuple[Prefix, ...] = ()

    @model_validator(mode="after")
    def _one_trunk_form(self) -> Customer:
        if self.trunk is not None and self.trunks is not None:
            raise ValueError("give trunk or trunks, not both")
        return self


# ------------------------------------------------------------------------------------------------ media
class Smtp(Strict):
    """Where voicemail e-mails go out (the message's WAV attached)."""

    host: Text
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    username: Text | None = None
    password: Text | None = None
    sender: Text = "voicemail@sipcore.invalid"
    timeout: Duration = Field(30, ge=1, le=600)


class VoicemailSettings(Strict):
    max_messages: int = Field(100, ge=1, le=10_000)  # per mailbox; a full box says so and records nothing
    max_message_seconds: Duration = Field(120, ge=5, le=3600)
    min_message_seconds: int = Field(1, ge=0, le=60)  # shorter recordings are discarded
    silence_seconds: Duration = Field(5, ge=1, le=60)  # a deposit ends after this much silence
    max_greeting_seconds: Duration = Field(60, ge=5, le=600)
    timezone: Annotated[Text, AfterValidator(_timezone)] = (
        "UTC"  # dates spoken in the mailbox menu and written in e-mails
    )
    mwi_refresh: Duration = Field(600, ge=30)  # unsolicited message-summary resent this often


class ConferenceSettings(Strict):
    max_participants: int = Field(20, ge=2, le=100)


def _port_range(value: Any) -> tuple[int, int]:
    text = str(value).strip()
    m = re.fullmatch(r"(\d{1,5})\s*-\s*(\d{1,5})", text)
    if not m:
        raise ValueError(f"{text!r} is not a port range like 10000-20000")
    low, high = int(m.group(1)), int(m.group(2))
    if not (1024 <= low < high <= 65535):
        raise ValueError(f"port range {low}-{high}: need 1024 <= low < high <= 65535")
    return (low, high)


PortRange = Annotated[tuple[int, int], PlainValidator(_port_range)]


class MediaSection(Strict):
    """The media service (voicemail, mailbox menu, conference, message waiting) behind
    ``proxy.media_service``; ``sipcore serve`` starts it as a child process when enabled."""

    enabled: bool = True
    rtp_address: Text = "127.0.0.1"  # bound for RTP and written in SDP (c=): a public address in production
    rtp_ports: PortRange = (10000, 20000)
    rtp_timeout: Duration = Field(30, ge=2, le=3600)  # no RTP for this long ends the call (BYE)
    prompts: Text | None = None  # a directory of 8 kHz WAV prompts; default: the shipped English set
    voicemail: VoicemailSettings = VoicemailSettings()
    conference: ConferenceSettings = ConferenceSettings()
    smtp: Smtp | None = None


# ------------------------------------------------------------------------------------------------ root
class ConfigFile(Strict):
    default_domain: Domain | None = None
    server: ServerSection = ServerSection()
    registrar: RegistrarSection = RegistrarSection()
    proxy: ProxySection = ProxySection()
    trunks: Annotated[Mapping[Name, Trunk], _FROZEN] = _NO_ENTRIES
    cdr: CdrSection = SqliteCdr(backend="sqlite")
    rating: RatingSection = Field(default_factory=RatingSection)
    media: MediaSection = MediaSection()
    customers: tuple[Customer, ...] = ()
