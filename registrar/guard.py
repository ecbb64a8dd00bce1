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
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "DEFAULT_SCANNER_AGENTS",
    "BanReason",
    "Guard",
    "GuardConfig",
    "GuardStats",
    "IpBanned",
    "Verdict",
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
    """Failure counters and the ban list. Not thread-safe: one per event loop / process."""

    def __init__(self, config: GuardConfig | None = None) -> None:
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
        self.failures_total = 0
        self.bans_total = 0
        self.scanners_total = 0
        self.evictions_total = 0

    # -- keys --
    def source_key(self, ip: str) -> str:
        """The ban/count key of an address: itself for IPv4, its network for IPv6."""
        if ":" not in ip:
            return ip
        try:
            net = ipaddress.IPv6Network((ip.split("%", 1)[0], self.config.ipv6_prefix), strict=False)
        except ValueError:
            return ip
        return str(net)

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
        source = self._bump(self._sources, key, now, cfg.max_tracked_ips)
        slow_count = self._slow_bump(key, now) if cfg.slow_threshold else 0
        user_count = 0
        user_key = None
        if username:
            user_key = username[:MAX_USERNAME_KEY]
            user_win = self._bump(self._users, user_key, now, cfg.max_tracked_users)
            user_count = user_win.count
            shares = user_win.by_source
            if shares is None:
                shares = user_win.by_source = {}
            if key in shares or len(shares) < MAX_SOURCES_PER_USER:
                shares[key] = shares.get(key, 0) + 1
        if source.count >= cfg.ip_threshold or (cfg.slow_threshold and slow_count >= cfg.slow_threshold):
            return self._ban(key, now, BanReason.SOURCE_FAILURES, user_key)
        if user_count >= cfg.user_threshold:
            return self._ban(key, now, BanReason.USERNAME_FAILURES, user_key)
        return None

    def record_success(self, ip: str, username: str | None, now: float) -> None:
        """A good login takes back the failures *this source* made against the username (the real
        user's typos), nothing else: not the other sources' failures against it (the real phone
        registering would otherwise reset a distributed attack's count), and not the source's own
        counters (one valid account would otherwise let an attacker reset its address's count
        between guesses at other accounts)."""
        if not username:
            return
        user_key = username[:MAX_USERNAME_KEY]
        win = self._users.get(user_key)
        if win is None or win.by_source is None:
            return
        own = win.by_source.pop(self.source_key(ip), 0)
        win.count -= own
        if win.count <= 0:
            del self._users[user_key]

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

    def _ban(self, key: str, now: float, reason: BanReason, username: str | None) -> IpBanned:
        cfg = self.config
        until = now + cfg.ban_time
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
