"""The guard shared by the workers (server/guard_share.py), its frames carried by hand between three
in-process ends: thresholds count every worker's failures, every worker holds every ban, and each ban
is reported (logged and counted) exactly once, by its source's authority, even when two workers ban
one source in the same instant."""

from __future__ import annotations

import time

import msgpack

from registrar.guard import BanReason, Guard, GuardConfig, IpBanned
from server.guard_share import GuardShare, authority

WORKERS = 3


class Cluster:
    """Three workers' guards and adapters; ``deliver`` runs the frames sent so far."""

    def __init__(self, **config: object) -> None:
        cfg = GuardConfig(**{"whitelist": (), "slow_threshold": 0, **config})  # type: ignore[arg-type]
        self.guards = [Guard(cfg, share=True) for _ in range(WORKERS)]
        self.reports: list[tuple[int, IpBanned, str]] = []
        self.queue: list[tuple[int, bytes]] = []
        self.ends = [
            GuardShare(i, WORKERS, self._sender(i), self._guard(i), self._reporter(i)) for i in range(WORKERS)
        ]

    def _sender(self, index: int):  # type: ignore[no-untyped-def]
        return lambda payload, at_once: self.queue.append((index, payload))

    def _guard(self, index: int):  # type: ignore[no-untyped-def]
        return lambda: self.guards[index]

    def _reporter(self, index: int):  # type: ignore[no-untyped-def]
        return lambda ban, method: self.reports.append((index, ban, method))

    def deliver(self) -> None:
        queue, self.queue = self.queue, []
        for sender, payload in queue:
            for end in self.ends:
                if end.index != sender:
                    end.receive(payload)

    def fail(self, worker: int, ip: str, user: str, now: float) -> IpBanned | None:
        """One failure seen by ``worker``, as RegistrarService does it: count, publish, announce."""
        ban = self.guards[worker].record_failure(ip, user, now)
        self.ends[worker].publish()
        if ban is not None:
            self.ends[worker].announce(ban, "INVITE")
        return ban


def test_failures_spread_over_the_workers_ban_at_the_threshold() -> None:
    c = Cluster(ip_threshold=6)
    now = time.time()
    bans = []
    for n in range(6):
        bans.append(c.fail(n % WORKERS, "203.0.113.9", f"user{n}", now))
        c.deliver()
    assert bans[:5] == [None] * 5 and bans[5] is not None  # the 6th failure server-wide
    assert all(g.is_banned("203.0.113.9", now + 1) for g in c.guards)  # every worker drops it
    assert len(c.reports) == 1
    index, ban, method = c.reports[0]
    assert index == authority("203.0.113.9", WORKERS) and method == "INVITE"
    assert ban.reason is BanReason.SOURCE_FAILURES and ban.username == "user5"


def test_two_workers_banning_at_once_report_once() -> None:
    c = Cluster(ip_threshold=2)
    now = time.time()
    source = "203.0.113.20"
    c.fail(0, source, "a", now)
    c.fail(1, source, "b", now)  # neither has the other's failure yet
    c.deliver()
    assert c.fail(0, source, "c", now) is not None
    assert c.fail(1, source, "d", now) is not None  # both ban before either ban arrives
    c.deliver()
    assert [r[0] for r in c.reports] == [authority(source, WORKERS)]


def test_an_attacked_username_refuses_fresh_sources_on_every_worker() -> None:
    c = Cluster(user_threshold=3)
    now = time.time()
    c.guards[2].record_success("198.51.100.7", "alice", now)  # the phone logs in through worker 2
    c.ends[2].publish()
    for i in range(3):
        c.fail(i, f"203.0.113.{i + 1}", "alice", now)
    c.deliver()
    for g in c.guards:
        assert g.refuses_guess("203.0.113.99", "alice", now)
        assert not g.refuses_guess("198.51.100.7", "alice", now)


def test_a_ban_from_elsewhere_and_bad_frames() -> None:
    c = Cluster()
    now = time.time()
    ban = c.guards[1].ban("192.0.2.44", BanReason.SCANNER, now)
    assert ban is not None
    c.ends[1].announce(ban, "OPTIONS")
    c.ends[0].receive(b"\xc1")  # not msgpack
    c.ends[0].receive(msgpack.packb([["x", 1]]))  # unknown event
    c.ends[0].receive(msgpack.packb([["b", "192.0.2.45", "soon"]]))  # short, bad until
    assert c.ends[0].malformed == 3
    c.deliver()
    assert all(g.is_banned("192.0.2.44", now + 1) for g in c.guards)
    assert [(r[1].reason, r[2]) for r in c.reports] == [(BanReason.SCANNER, "OPTIONS")]
