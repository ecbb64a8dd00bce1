"""Brute-force guard: count failed authentications, ban abusive source addresses, refuse scanners.

Pure and bounded: every call takes ``now`` (seconds, any monotonic-enough clock) and returns values;
the server drops packets from banned sources before parsing them and maps :meth:`Guard.stats` to
Prometheus. Every table has a hard size cap so a flood of distinct (spoofed) sources cannot grow
memory without bound; the price of the cap is that, under such a flood, the oldest counters are
forgotten early (counted in ``evictions_total``).

Counting uses a fixed window per key that starts at the key's first failure. A source is banned when
its own failures reach ``ip_threshold`` within the window, when ``slow_threshold`` of its failures fall
within any ``slow_window`` seconds (a sliding window: slow guessing, fail2ban's findtime/maxretry), or
when it fails against a username whose failures (from any source) have reached ``user_threshold`` —
that catches distributed guessing of one account without locking the real user out. A successful
login takes back only the failures its own source made against that username (the real user's
typos), never the other sources' failures. IPv6 sources are keyed by their /64 (configurable):
one host owns a whole /64 and could otherwise rotate addresses for free.

Once a username's failures reach ``user_threshold`` — within the fixed window, or within any
``slow_window`` (a sliding window per username, on with the sources' one) — it is *under attack* for
``ban_time`` (renewed by each further failure against it): a source that has not logged in as that user within
``known_source_time`` is refused before its credentials are looked at (:meth:`Guard.refuses_guess`;
the caller counts it as a failure, which bans it), while the real user's known sources — the latest
``max_known_sources`` to succeed per username — still pass and are never banned for the username's
count. So a distributed attack gets at most ``user_threshold`` checked guesses per ``ban_time``.

Several processes (the server's workers; the platform's hosts) share one guard's view through
adapters (server/guard_share.py over the worker channel, server/guard_redis.py over Redis): built
with ``share=True`` the guard queues its failures and the successes that changed something
(:meth:`Guard.take_shared`), the adapters hand them to the other processes, which apply them with
:meth:`Guard.record_peer_failure` / :meth:`Guard.record_peer_success` (counted, never banning) and a
ban decided elsewhere with :meth:`Guard.install_ban`.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = [
    "DEFAULT_SCANNER_AGENTS",
    "BanReason",
    "Guard",
    "GuardConfig",
    "GuardStats",
    "IpBanned",
    "Verdict",
    "address_key",
]

DEFAULT_SCANNER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sundayddr",
    "sip-scan",
    "sipscan",
    "iwar",
)
MAX_USERNAME_KEY = 128  # usernames come from attackers: bound the key
MAX_SOURCES_PER_USER = 256  # per-source shares of a username's count kept (beyond: not clearable)
MAX_SHARED = 4096  # events queued for the other processes between two take_shared (beyond: dropped)


def address_key(ip: str, ipv6_prefix: int) -> str:
    """The key a source is counted and banned under: itself for IPv4, its /``ipv6_prefix`` network
    for IPv6 (one host owns a whole /64 and could rotate addresses inside it for free)."""
    if ":" not in ip:
        return ip
    try:
        net = ipaddress.IPv6Network((ip.split("%", 1)[0], ipv6_prefix), strict=False)
    except ValueError:
        return ip
    return str(net)


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """Tunables; the defaults suit a Centrex platform whose phones re-register every 60–3600 s."""

    window: float = 60.0
    ip_threshold: int = 10
    user_threshold: int = 30
    ban_time: float = 600.0
    slow_window: float = 600.0
    slow_threshold: int = 5  # 0: no slow window
    whitelist: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    block_scanners: bool = True
    ban_scanners: bool = True
    scanner_agents: tuple[str, ...] = DEFAULT_SCANNER_AGENTS
    ipv6_prefix: int = 64
    known_source_time: float = 86_400.0  # a login makes its source known for the username this long
    max_known_sources: int = 8  # per username, the latest to succeed
    max_tracked_ips: int = 65_536
    max_tracked_users: int = 65_536
    max_bans: int = 65_536

    def __post_init__(self) -> None:
        if self.window <= 0 or self.ban_time <= 0:
            raise ValueError("window and ban_time must be positive")
        if self.ip_threshold < 1 or self.user_threshold < 1:
            raise ValueError("thresholds must be at least 1")
        if self.slow_threshold < 0 or self.slow_window <= 0:
            raise ValueError("slow_threshold must be at least 0 and slow_window positive")
        if min(self.max_tracked_ips, self.max_tracked_users, self.max_bans) < 1:
            raise ValueError("table sizes must be at least 1")
        if self.known_source_time <= 0 or self.max_known_sources < 1:
            raise ValueError("known_source_time must be positive and max_known_sources at least 1")
        if not 1 <= self.ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be within 1..128")
        for cidr in self.whitelist:
            ipaddress.ip_network(cidr, strict=False)  # raises ValueError naming the bad entry


class Verdict(Enum):
    """What to do with a request from a source (see :meth:`Guard.check_request`)."""

    ALLOW = "allow"
    DROP_BANNED = "drop banned"  # silently drop: no response, no parse
    DROP_SCANNER = "drop scanner"  # known scanner User-Agent: silently drop


class BanReason(Enum):
    SOURCE_FAILURES = "failures from source"
    USERNAME_FAILURES = "failures against username"
    SCANNER = "scanner user-agent"
    RATE = "request rate"  # over the per-source request-rate limit (registrar/pike.py)


@dataclass(frozen=True, slots=True)
class IpBanned:
    """A source was banned (log it; ``source`` is the key: the address, or its /64 for IPv6)."""

    source: str
    until: float
    reason: BanReason
    username: str | None = None


@dataclass(frozen=True, slots=True)
class GuardStats:
    """Counters for metrics: ``*_total`` are monotonic counters, the rest are gauges."""

    failures_total: int
    bans_total: int
    bans_active: int
    scanners_total: int
    evictions_total: int
    tracked_sources: int
    tracked_users: int


class _Window:
    __slots__ = ("by_source", "count", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.by_source: dict[str, int] | None = None  # usernames' windows: each source's share


class Guard:
    """Failure counters and the ban list. Not thread-safe: one per event loop / process; ``share``:
    queue the events other processes must apply (see the module docstring)."""

    def __init__(self, config: GuardConfig | None = None, *, share: bool = False) -> None:
        self.config = config = config or GuardConfig()
        self._whitelist = [ipaddress.ip_network(c, strict=False) for c in config.whitelist]
        self._agents = tuple(a.lower() for a in config.scanner_agents)
        self._whitelisted: dict[str, bool] = {}
        self._sources: OrderedDict[str, _Window] = OrderedDict()
        self._users: OrderedDict[str, _Window] = OrderedDict()
        # the sliding slow window: per source, its last ``slow_threshold`` failure times, the table
        # ordered by latest failure (so expired entries are purged from the front)
        self._slow: OrderedDict[str, deque[float]] = OrderedDict()
        self._bans: OrderedDict[str, float] = OrderedDict()
        # usernames under attack -> until (ordered by until); per username its known sources -> last
        # login (the users table ordered by latest login, each source table by its latest login)
        self._attacked: OrderedDict[str, float] = OrderedDict()
        self._known: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._user_slow: OrderedDict[str, deque[tuple[float, str]]] = OrderedDict()  # per username
        self._outbox: list[tuple[Any, ...]] | None = [] if share else None
        self.shared_dropped = 0
        self.failures_total = 0
        self.bans_total = 0
        self.scanners_total = 0
        self.evictions_total = 0

    # -- keys --
    def source_key(self, ip: str) -> str:
        """The ban/count key of an address (`address_key` with this guard's IPv6 prefix)."""
        return address_key(ip, self.config.ipv6_prefix)

    def is_whitelisted(self, ip: str) -> bool:
        """Memoised (bounded): asked for every authentication outcome of every phone."""
        cache = self._whitelisted
        known = cache.get(ip)
        if known is not None:
            return known
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
            result = any(addr in net for net in self._whitelist)
        except ValueError:
            result = False
        if len(cache) >= 65_536:
            cache.clear()
        cache[ip] = result
        return result

    # -- per packet --
    def is_banned(self, ip: str, now: float) -> bool:
        """Cheap check for every datagram/connection before parsing (a dict lookup for IPv4)."""
        key = self.source_key(ip)
        until = self._bans.get(key)
        if until is None:
            return False
        if now >= until:
            del self._bans[key]
            return False
        return True

    def is_scanner(self, user_agent: str | None) -> bool:
        if not user_agent:
            return False
        ua = user_agent[:256].lower()
        return any(agent in ua for agent in self._agents)

    def check_request(self, ip: str, user_agent: str | None, now: float) -> tuple[Verdict, IpBanned | None]:
        """After parsing: drop banned sources and (optionally) known scanners, banning them if configured."""
        if self.is_banned(ip, now):
            return Verdict.DROP_BANNED, None
        if not self.config.block_scanners or not self.is_scanner(user_agent) or self.is_whitelisted(ip):
            return Verdict.ALLOW, None
        self.scanners_total += 1
        event = (
            self._ban(self.source_key(ip), now, BanReason.SCANNER, None) if self.config.ban_scanners else None
        )
        return Verdict.DROP_SCANNER, event

    # -- authentication outcomes --
    def record_failure(self, ip: str, username: str | None, now: float) -> IpBanned | None:
        """Count one failed authentication; returns the ban it caused, if any. Whitelisted: ignored."""
        if self.is_whitelisted(ip):
            return None
        self.failures_total += 1
        cfg = self.config
        key = self.source_key(ip)
        if key in self._bans and self.is_banned(ip, now):
            return None  # already banned (late packet in flight)
        source_count, slow_count, user_key = self._count(key, username, now)
        if self._outbox is not None:
            self._share(("f", key, user_key, now))
        if source_count >= cfg.ip_threshold or (cfg.slow_threshold and slow_count >= cfg.slow_threshold):
            return self._ban(key, now, BanReason.SOURCE_FAILURES, user_key)
        if user_key is not None and user_key in self._attacked and not self._is_known(user_key, key, now):
            # _count has just renewed (or set) the username's attack
            return self._ban(key, now, BanReason.USERNAME_FAILURES, user_key)
        return None

    def record_peer_failure(self, key: str, username: str | None, now: float) -> None:
        """A failure another process counted (``key``: its source key): counted here too, so every
        threshold holds for the sum; never bans (the process that saw it decides, and says so)."""
        if key not in self._bans or not self.is_banned(key, now):
            self._count(key, username, now)

    def refuses_guess(self, ip: str, username: str | None, now: float) -> bool:
        """Is ``username`` under attack and ``ip`` not one of its known sources? Then the credentials
        are not to be checked (the caller records the attempt as a failure). One dict test when no
        username is under attack."""
        attacked = self._attacked
        if not attacked or not username:
            return False
        user_key = username[:MAX_USERNAME_KEY]
        until = attacked.get(user_key)
        if until is None or now >= until or self.is_whitelisted(ip):
            return False
        return not self._is_known(user_key, self.source_key(ip), now)

    def record_success(self, ip: str, username: str | None, now: float) -> None:
        """A good login takes back the failures *this source* made against the username (the real
        user's typos), nothing else: not the other sources' failures against it (the real phone
        registering would otherwise reset a distributed attack's count), and not the source's own
        counters (one valid account would otherwise let an attacker reset its address's count
        between guesses at other accounts). The source becomes known for the username."""
        if not username:
            return
        user_key = username[:MAX_USERNAME_KEY]
        key = self.source_key(ip)
        changed = self._take_back(user_key, key)
        news = self._remember(user_key, key, now) or changed
        if news and self._outbox is not None:
            self._share(("s", key, user_key, now))

    def record_peer_success(self, key: str, username: str | None, now: float) -> None:
        """A login another process saw (its source key), as :meth:`record_success` without sharing."""
        if username:
            user_key = username[:MAX_USERNAME_KEY]
            self._take_back(user_key, key)
            self._remember(user_key, key, now)

    def take_shared(self) -> list[tuple[Any, ...]]:
        """The events queued for the other processes since the last call (``share=True``): tuples
        ``("f", key, username, now)`` for a failure, ``("s", key, username, now)`` for a login."""
        box = self._outbox
        if not box:
            return []
        self._outbox = []
        return box

    # -- bans decided elsewhere --
    def ban(
        self, ip: str, reason: BanReason, now: float, username: str | None = None,
        ban_time: float | None = None,
    ) -> IpBanned | None:  # fmt: skip
        """Ban a source for ``reason`` (a request-rate limit, an operator) for ``ban_time`` seconds
        (the configured one when None): the event to log and share, None when whitelisted or
        already banned."""
        if self.is_whitelisted(ip) or self.is_banned(ip, now):
            return None
        return self._ban(self.source_key(ip), now, reason, username, ban_time)

    def install_ban(self, key: str, until: float, now: float) -> bool:
        """A ban another process decided (``key``: its source key): True when it is new here."""
        if until <= now:
            return False
        bans = self._bans
        current = bans.get(key)
        fresh = current is None or current <= now
        if current is not None and current >= until:
            return fresh
        self._sources.pop(key, None)
        self._slow.pop(key, None)
        if current is None and len(bans) >= self.config.max_bans:
            self._purge_bans(now)
            if len(bans) >= self.config.max_bans:
                bans.popitem(last=False)
                self.evictions_total += 1
        bans.pop(key, None)
        bans[key] = until
        return fresh

    # -- administration and housekeeping --
    def unban(self, ip: str) -> bool:
        return self._bans.pop(self.source_key(ip), None) is not None

    def banned(self, now: float) -> dict[str, float]:
        """Active bans: source key -> until."""
        self.expire(now)
        return dict(self._bans)

    def next_deadline(self) -> float | None:
        """Earliest ban expiry (bans are lifted lazily anyway; this is for an optional timer)."""
        return min(self._bans.values(), default=None)

    def expire(self, now: float) -> None:
        """Drop expired bans and finished windows. Cheap; call from a periodic timer or stats()."""
        self._purge_bans(now)
        self._purge(self._sources, now)
        self._purge(self._users, now)
        self._purge_slow(now)
        self._purge_user_slow(now)
        attacked = self._attacked
        while attacked:
            user_key, until = next(iter(attacked.items()))
            if until > now:
                break
            del attacked[user_key]

    def stats(self, now: float) -> GuardStats:
        self.expire(now)
        return GuardStats(
            failures_total=self.failures_total,
            bans_total=self.bans_total,
            bans_active=len(self._bans),
            scanners_total=self.scanners_total,
            evictions_total=self.evictions_total,
            tracked_sources=len(self._sources),
            tracked_users=len(self._users),
        )

    # -- internals --
    def _count(self, key: str, username: str | None, now: float) -> tuple[int, int, str | None]:
        """One failure in every table: (the source's count, its slow-window count, the username key).
        A username whose count reaches ``user_threshold`` (in the fixed window, or within any
        ``slow_window`` when the slow window is on) is under attack for ``ban_time``, renewed by each
        further failure against it."""
        cfg = self.config
        source = self._bump(self._sources, key, now, cfg.max_tracked_ips)
        slow_count = self._slow_bump(key, now) if cfg.slow_threshold else 0
        if not username:
            return source.count, slow_count, None
        user_key = username[:MAX_USERNAME_KEY]
        user_win = self._bump(self._users, user_key, now, cfg.max_tracked_users)
        shares = user_win.by_source
        if shares is None:
            shares = user_win.by_source = {}
        if key in shares or len(shares) < MAX_SOURCES_PER_USER:
            shares[key] = shares.get(key, 0) + 1
        # the username's sliding slow window too: user_threshold failures within any slow_window
        slow_user = self._user_slide(user_key, key, now) if cfg.slow_threshold else 0
        attacked = self._attacked
        until = attacked.get(user_key)
        if (
            user_win.count >= cfg.user_threshold
            or slow_user >= cfg.user_threshold
            or (until is not None and until > now)
        ):
            if attacked.pop(user_key, None) is None and len(attacked) >= cfg.max_tracked_users:
                attacked.popitem(last=False)
                self.evictions_total += 1
            attacked[user_key] = now + cfg.ban_time  # appended: ordered by until
        return source.count, slow_count, user_key

    def _take_back(self, user_key: str, key: str) -> bool:
        """``key``'s failures against ``user_key`` forgotten (both windows); True if it had any."""
        pairs = self._user_slow.get(user_key)
        slid = pairs is not None and any(source == key for _, source in pairs)
        if slid:
            assert pairs is not None
            self._user_slow[user_key] = deque([p for p in pairs if p[1] != key], maxlen=pairs.maxlen)
        win = self._users.get(user_key)
        if win is None or win.by_source is None:
            return slid
        own = win.by_source.pop(key, 0)
        win.count -= own
        if win.count <= 0:
            del self._users[user_key]
        return own > 0 or slid

    def _remember(self, user_key: str, key: str, now: float) -> bool:
        """``key`` logged in as ``user_key``: True when that is news worth sharing: a new known
        source, or the first login in a new half of ``known_source_time`` (so the other processes,
        told at least once per half-period while the phone keeps logging in, never let it expire)."""
        cfg = self.config
        table = self._known
        sources = table.get(user_key)
        if sources is None:
            if len(table) >= cfg.max_tracked_users:
                table.popitem(last=False)
                self.evictions_total += 1
            sources = table[user_key] = {}
        else:
            table.move_to_end(user_key)
        last = sources.pop(key, None)
        sources[key] = now  # re-inserted: each table ordered by latest login
        if len(sources) > cfg.max_known_sources:
            del sources[next(iter(sources))]
        half = cfg.known_source_time / 2
        return last is None or now // half != last // half

    def _is_known(self, user_key: str, key: str, now: float) -> bool:
        sources = self._known.get(user_key)
        last = sources.get(key) if sources is not None else None
        return last is not None and now - last < self.config.known_source_time

    def _share(self, event: tuple[Any, ...]) -> None:
        box = self._outbox
        assert box is not None
        if len(box) >= MAX_SHARED:
            self.shared_dropped += 1
            return
        box.append(event)

    def _bump(self, table: OrderedDict[str, _Window], key: str, now: float, cap: int) -> _Window:
        win = table.get(key)
        if win is None or now - win.start >= self.config.window:
            if win is not None:
                del table[key]
            elif len(table) >= cap:
                self._purge(table, now)
                if len(table) >= cap:
                    table.popitem(last=False)
                    self.evictions_total += 1
            win = _Window(now)
            table[key] = win  # appended: the table stays ordered by window start
        win.count += 1
        return win

    def _slow_bump(self, key: str, now: float) -> int:
        """Record a failure in ``key``'s sliding slow window; the failures within it, this one included."""
        cfg = self.config
        table = self._slow
        times = table.get(key)
        if times is None:
            if len(table) >= cfg.max_tracked_ips:
                self._purge_slow(now)
                if len(table) >= cfg.max_tracked_ips:
                    table.popitem(last=False)
                    self.evictions_total += 1
            times = table[key] = deque(maxlen=cfg.slow_threshold)
        else:
            table.move_to_end(key)  # the table stays ordered by latest failure
            if times.maxlen != cfg.slow_threshold:  # carried over a reload that changed the threshold
                times = table[key] = deque(times, maxlen=cfg.slow_threshold)
        times.append(now)
        while now - times[0] >= cfg.slow_window:
            times.popleft()
        return len(times)

    def _user_slide(self, user_key: str, key: str, now: float) -> int:
        """Record a failure from ``key`` in ``user_key``'s sliding slow window, which keeps the last
        ``user_threshold`` (time, source) pairs (a login takes its source's back); the failures within
        the window, this one included."""
        cfg = self.config
        table = self._user_slow
        pairs = table.get(user_key)
        if pairs is None:
            if len(table) >= cfg.max_tracked_users:
                self._purge_user_slow(now)
                if len(table) >= cfg.max_tracked_users:
                    table.popitem(last=False)
                    self.evictions_total += 1
            pairs = table[user_key] = deque(maxlen=cfg.user_threshold)
        else:
            table.move_to_end(user_key)  # ordered by latest failure
            if pairs.maxlen != cfg.user_threshold:  # carried over a reload that changed the threshold
                pairs = table[user_key] = deque(pairs, maxlen=cfg.user_threshold)
        pairs.append((now, key))
        while now - pairs[0][0] >= cfg.slow_window:
            pairs.popleft()
        return len(pairs)

    def _purge_user_slow(self, now: float) -> None:
        table, window = self._user_slow, self.config.slow_window
        while table:
            user_key, pairs = next(iter(table.items()))
            if pairs and now - pairs[-1][0] < window:
                break
            del table[user_key]

    def _purge_slow(self, now: float) -> None:
        table, window = self._slow, self.config.slow_window
        while table:
            key, times = next(iter(table.items()))
            if now - times[-1] < window:
                break
            del table[key]

    def _purge(self, table: OrderedDict[str, _Window], now: float) -> None:
        window = self.config.window
        while table:
            key, win = next(iter(table.items()))
            if now - win.start < window:
                break
            del table[key]

    def _purge_bans(self, now: float) -> None:
        # Bans are appended with one ban_time, so the oldest expires first: pop from the front.
        bans = self._bans
        while bans:
            key, until = next(iter(bans.items()))
            if until > now:
                break
            del bans[key]

    def _ban(
        self, key: str, now: float, reason: BanReason, username: str | None, ban_time: float | None = None
    ) -> IpBanned:
        cfg = self.config
        until = now + (cfg.ban_time if ban_time is None else ban_time)
        self._sources.pop(key, None)
        self._slow.pop(key, None)
        if key not in self._bans and len(self._bans) >= cfg.max_bans:
            self._purge_bans(now)
            if len(self._bans) >= cfg.max_bans:
                self._bans.popitem(last=False)
                self.evictions_total += 1
        self._bans.pop(key, None)
        self._bans[key] = until  # appended: with one ban_time the table stays ordered by expiry
        self.bans_total += 1
        return IpBanned(key, until, reason, username)
