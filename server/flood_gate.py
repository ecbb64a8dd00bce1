"""The flood gate: every message a transport reads passes here once, before parsing and before any
hand-off to another worker (the SIP server's ``admit`` hook).

A banned source is dropped at once (one dict lookup). Every other message is counted per source by
the request-rate limit (registrar/pike.py); a source that goes over it is banned through the guard's
ban list — the one list every message is checked against — unless it is whitelisted or a trunk's,
and the ban goes to the registrar's one entry for bans (``on_ban``: made the whole server's with
several workers and the platform's with several hosts, logged ``source_banned`` and counted), beside a ``rate_exceeded`` line with the rate. With ``nft_set`` configured, bans are mirrored into nftables
(server/nft_bans.py): each banned source is handed to the kernel at its first message dropped here,
whichever part banned it (rate, failed authentications, scanner) and whichever worker.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import structlog

from registrar.guard import BanReason, Guard, IpBanned
from registrar.pike import Pike, PikeConfig
from sipcore.flow import Flow

from . import metrics
from .metrics import FastCounter, StatsCounter
from .nft_bans import NftBanMirror

OnBan = Callable[[IpBanned, str], None]

log = structlog.get_logger("sipcore.guard")

RATE_EXCEEDED = FastCounter(
    "sipcore_rate_exceeded_total",
    "Sources over the per-source request-rate limit, by outcome (banned, or exempt: whitelist / trunk)",
    ["outcome"],
)
NFT_ELEMENTS = StatsCounter(
    "sipcore_nft_ban_elements_total",
    "Bans mirrored into the nftables sets, by outcome (added, failed: logged as nft_ban_failed)",
    ["outcome"],
)
for _outcome in ("banned", "exempt"):
    RATE_EXCEEDED.labels(_outcome)
MAX_MIRRORED = 65_536  # sources already handed to nftables (with their expiry), bounded


class FloodGate:
    """``admit(flow)`` for the SIP server. ``guard`` returns the current guard (a reload replaces it);
    ``is_trunk`` tells a trunk's source (exempt from the rate limit); ``on_ban`` takes each ban made
    here (`RegistrarService.on_ban`)."""

    def __init__(
        self,
        guard: Callable[[], Guard | None],
        pike: Pike | None,
        is_trunk: Callable[[str, int], bool],
        on_ban: OnBan,
        mirror: NftBanMirror | None = None,
    ) -> None:
        self._guard = guard
        self.pike = pike
        self._is_trunk = is_trunk
        self._on_ban = on_ban
        self.mirror = mirror
        self._mirrored: OrderedDict[str, float] = OrderedDict()  # source key -> mirrored until
        self._export_mirror()
        self._dropped_banned = metrics.DROPPED.labels("banned")
        self._dropped_rate = metrics.DROPPED.labels("rate_limited")
        self._exempt = RATE_EXCEEDED.labels("exempt")
        self._banned = RATE_EXCEEDED.labels("banned")

    def update(self, pike: Pike | None, mirror: NftBanMirror | None) -> None:
        """A reload: the new limit (counters start again; bans are the guard's and stay) and sets."""
        self.pike = pike
        old = self.mirror
        if (mirror is None) != (old is None) or (
            mirror is not None and old is not None and (mirror.set4, mirror.set6) != (old.set4, old.set6)
        ):
            self.mirror = mirror
            self._mirrored.clear()
            self._export_mirror()

    def _export_mirror(self) -> None:
        mirror = self.mirror
        NFT_ELEMENTS.set_function(
            (lambda: {("added",): mirror.added, ("failed",): mirror.failed}) if mirror is not None else dict
        )

    def admit(self, flow: Flow) -> bool:
        """False: drop the message unread (its source is banned, or has just been)."""
        guard = self._guard()
        if guard is None:
            return True
        ip = flow.remote[0]
        now = time.time()
        if guard.is_banned(ip, now):
            self._dropped_banned.value += 1
            if self.mirror is not None:
                self._mirror(guard, ip, guard.config.ban_time, now)
            return False
        pike = self.pike
        if pike is None:
            return True
        exceeded = pike.hit(ip, now)
        if exceeded is None:
            return True
        if guard.is_whitelisted(ip) or self._is_trunk(ip, flow.remote[1]):
            self._exempt.value += 1
            return True
        ban_time = pike.config.ban_time
        ban = guard.ban(ip, BanReason.RATE, now, ban_time=ban_time)
        pike.forget(ip)
        self._dropped_rate.value += 1
        if ban is not None:
            self._banned.value += 1
            log.warning("rate_exceeded", source=ban.source, rate=exceeded.rate,
                        limit=f"{pike.config.requests}/{pike.config.window:g}s", ban_time=ban_time)  # fmt: skip
            self._on_ban(ban, "any")
            if self.mirror is not None:
                self._mirror(guard, ip, ban_time, now)
        return False

    def _mirror(self, guard: Guard, ip: str, seconds: float, now: float) -> None:
        """Hand the source to nftables once per ban (again only after the mirrored ban ran out)."""
        key = guard.source_key(ip)
        mirrored = self._mirrored
        until = mirrored.get(key)
        if until is not None and until > now:
            return
        if until is None and len(mirrored) >= MAX_MIRRORED:
            mirrored.popitem(last=False)
        mirrored[key] = now + seconds
        assert self.mirror is not None
        self.mirror.add(key, seconds)


def build_mirror(guard: object) -> NftBanMirror | None:
    """The nftables mirror of ``registrar.guard.nft_set`` / ``nft_set6`` (None when neither is set)."""
    set4, set6 = getattr(guard, "nft_set", None), getattr(guard, "nft_set6", None)
    return NftBanMirror(set4, set6) if set4 or set6 else None


def build_pike(rate_limit: object) -> Pike | None:
    """The request-rate limit of ``registrar.guard.rate_limit`` (None when disabled)."""
    if not getattr(rate_limit, "enabled", False):
        return None
    return Pike(
        PikeConfig(
            requests=int(rate_limit.requests),  # type: ignore[attr-defined]
            window=float(rate_limit.window),  # type: ignore[attr-defined]
            ban_time=float(rate_limit.ban_time),  # type: ignore[attr-defined]
        )
    )
