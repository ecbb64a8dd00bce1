"""One worker process's place among the others: which worker owns each message, hand-offs in and out
over the worker channel, and the replicas (location, account state) kept current through it.

Built by the master's fork (`server.workers`) and passed explicitly to what needs the worker context
(`server.app.Application`: the registrar's node id and location replica, the account-state replica,
the per-worker CDR spool); a single-process server passes none.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from registrar.location.fallback import FallbackLocationStore
from registrar.location.redis_store import RedisLocationStore
from registrar.location.replicated import ReplicatedLocationStore
from routing.feature_codes import ForwardingChange
from routing.state import Overrides
from server.account_state import HostPeers
from server.account_state_replicated import ReplicatedAccountState
from server.admin_peers import AdminHandler, AdminPeers
from server.guard_share import GuardShare
from server.worker_channel import (
    ACCOUNT,
    ADMIN_ANSWER,
    ADMIN_ASK,
    DELIVER,
    DRAINED,
    GUARD,
    LOCATION,
    WRITE,
    Channel,
    ChannelError,
    decode_frame,
    encode_account,
    encode_location,
    encode_message,
    encode_payload,
)
from sipcore.flow import Flow
from sipcore.ownership import conn_prefix, owner_of, worker_of_conn
from sipcore.transport import SharedSockets

log = structlog.get_logger("sipcore.workers")

_IN_DIALOG = re.compile(rb"\n(?:To|t)[ \t]*:[^\n]*;[ \t]*tag=", re.IGNORECASE)  # an INVITE with a To tag
HEAD_SCAN = 4096  # the To header is in the head; not the body

_KIND = {
    DELIVER: "message",
    WRITE: "tcp_write",
    LOCATION: "location",
    ACCOUNT: "account",
    ADMIN_ASK: "admin_ask",
    ADMIN_ANSWER: "admin_answer",
    DRAINED: "drained",
    GUARD: "guard",
}


class Worker:
    """One worker's routing: owner of each message, hand-offs in and out, the location replica."""

    def __init__(
        self,
        index: int,
        count: int,
        node_id: str,
        channel: Channel,
        listeners: dict[tuple[str, str], socket.socket] | None = None,
        server_pid: int = 0,
        steered: frozenset[str] = frozenset(),
    ) -> None:
        self.index = index
        self.server_pid = server_pid  # the master's: the pid `sipcore reload` signals
        self.count = count
        self.node_id = node_id  # shared by every worker: TCP flow ids mean the same thing everywhere
        self.channel = channel
        self.listeners = dict(listeners or {})  # bound by the master, inherited over fork
        self.steered = steered  # UDP addresses where the listener is this worker's own (sipcore.steering)
        channel.on_frame = self.on_frame
        self.location: ReplicatedLocationStore | FallbackLocationStore | None = None
        self.accounts: Any = None  # ReplicatedAccountState, or RedisAccountState with HostPeers
        self.admin: AdminPeers | None = None
        self.guard: GuardShare | None = None
        self._sip: Any = None
        self._local: Any = None
        self.drained: set[int] = set()  # workers done with their calls (SIGTERM)
        # Plain counters on the hot path, read by `HandoffCollector` when /metrics is scraped.
        self.out_count = dict.fromkeys(_KIND, 0)
        self.in_count = dict.fromkeys(_KIND, 0)

    def sockets(self) -> SharedSockets:
        """For the SIP server's transports: the inherited sockets, our connection ids, remote writes.

        On a steered UDP address (`sipcore.steering`) the worker reads its own socket, where the
        kernel delivers what it owns. On any other, every worker reads the one socket, one woken per
        datagram (SharedUdpReader, EPOLLEXCLUSIVE): whoever is free reads. Either way the reader
        hands what it does not own to its owner. (One reader per socket without steering left the
        other worker idle when phones use one address, and plain shared waiting woke every worker
        for each datagram: +30 % CPU per message.)"""
        shared_udp = frozenset(text for kind, text in self.listeners if kind == "udp") - self.steered
        return SharedSockets(
            self.listeners, shared_udp, conn_prefix(self.index), self.remote_write, workers=self.count
        )

    def entry(self, sip: Any) -> Callable[[bytes, Flow], None]:
        """The transports' callback for ``sip``: every message goes through ``route`` first."""
        self._sip = sip
        self._local = sip.on_message
        return self.route

    def location_store(self, state_path: str | Path | None) -> ReplicatedLocationStore:
        """This worker's location replica, its updates published on the channel."""
        self.location = ReplicatedLocationStore(state_path, self.index, self._publish)
        return self.location

    def fallback_location_store(
        self, redis: RedisLocationStore, timeout: float | None, retry_interval: float,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
        master_epoch: Callable[[], int] | None = None,
    ) -> FallbackLocationStore:  # fmt: skip
        """This worker's Redis location store with its local fallback; the AORs it writes are
        published on the channel so every worker can ring them while Redis is away."""
        store = FallbackLocationStore(redis, index=self.index, publish=self._publish, timeout=timeout,
                                      retry_interval=retry_interval, on_reconnect=on_reconnect,
                                      master_epoch=master_epoch)  # fmt: skip
        self.location = store
        return store

    def account_state(
        self,
        forwarding: Overrides,
        persist: Callable[[ForwardingChange], object] | None,
        lock_path: str | None = None,
    ) -> ReplicatedAccountState:
        """This worker's account-state replica (`server.account_state.build_account_state` decides
        when), its changes published on the channel; ``lock_path``: the file the workers lock around
        a new call's routing (`ReplicatedAccountState.exclusive`)."""
        drain = self.channel.drain
        self.accounts = ReplicatedAccountState(
            self.index, self._publish_account, forwarding, persist, drain=drain, lock_path=lock_path
        )
        return self.accounts

    def shared_account_state(self, build: Callable[[HostPeers], Any], lock_path: str | None) -> Any:
        """This worker's account state shared through Redis (server.account_state_redis), built with
        the host's other workers as peers: its count changes reach them on the channel too."""
        self.accounts = build(HostPeers(self._publish_account, self.channel.drain, lock_path))
        return self.accounts

    def admin_peers(self, handler: AdminHandler) -> AdminPeers:
        """This worker's end of the admin API's questions between workers: ``handler`` answers the
        others' questions (its calls, a hang-up, a payment to apply), the peers object asks them."""
        self.admin = AdminPeers(self.index, self.count, self._send_admin, handler)
        return self.admin

    def guard_share(self, guard: Callable[[], Any], report: Callable[[Any, str], None]) -> GuardShare:
        """This worker's end of the brute-force guard shared by all workers (`server.guard_share`):
        ``guard`` gives the registrar's current guard, ``report`` logs and counts a ban."""
        self.guard = GuardShare(self.index, self.count, self._send_guard, guard, report)
        return self.guard

    def _send_guard(self, payload: bytes, at_once: bool) -> None:
        self.out_count[GUARD] += 1
        self.channel.broadcast(encode_payload(GUARD, payload), at_once)

    def _send_admin(self, dest: int, kind: int, payload: bytes) -> bool:
        self.out_count[kind] += 1
        return self.channel.send(dest, encode_payload(kind, payload))

    # -- the drain (SIGTERM) --
    def announce_drained(self) -> None:
        """Tell the others this worker's calls are over; it goes on serving what it owns (REGISTER,
        hand-offs) until they are done too (``others_drained``)."""
        self.drained.add(self.index)
        self.out_count[DRAINED] += 1
        self.channel.broadcast(encode_payload(DRAINED, bytes((self.index,))), at_once=True)

    async def others_drained(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until every worker has announced its drain; False on time-out
        (a worker that died never announces)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while len(self.drained) < self.count and loop.time() < deadline:
            await asyncio.sleep(0.02)
            for peer in range(self.count):  # a worker that died drains nothing more: not waited for
                if peer not in self.drained and peer != self.index and not self.channel.peer_alive(peer):
                    self.drained.add(peer)
        return len(self.drained) >= self.count

    # -- out --
    def route(self, data: bytes, flow: Flow) -> None:
        """Transport callback: handle what we own, hand the rest to its owner. Never raises."""
        if self._sip.take_stateless(data, flow):
            return  # changes no state (a challenge, its ACK): answered here, no owner needed
        try:
            owner = owner_of(data, self.count)
        except Exception:  # bytes we cannot scan: handle here (the parser answers or drops them)
            owner = None
        if owner is None or owner == self.index:
            if data[:7] == b"INVITE ":  # account state it routes on: what the others sent first
                self.channel.drain()
            self._local(data, flow)
            return
        drop = self._sip.handlers.drop_source
        if drop is not None and drop(flow.remote[0]):  # banned (every worker holds every ban):
            self._local(data, flow)  # dropped and counted here, not handed over
            return
        try:
            frame = encode_message(DELIVER, data, flow)
        except ChannelError:
            self._local(data, flow)
            return
        self.out_count[DELIVER] += 1
        self.channel.send(owner, frame)

    def _route_invite(self, data: bytes, flow: Flow | None) -> None:
        try:
            self.channel.drain()
            self._local(data, flow)
        except Exception:
            log.exception("worker_deliver_failed")

    def remote_write(self, data: bytes, flow: Flow) -> bool:
        """A write on a TCP connection another worker holds: hand it over (False if none does)."""
        holder = worker_of_conn(flow.conn_id)
        if holder is None or holder == self.index or holder >= self.count:
            return False
        try:
            frame = encode_message(WRITE, data, flow)
        except ChannelError:
            return False
        self.out_count[WRITE] += 1
        return self.channel.send(holder, frame)

    def _publish(self, payload: bytes) -> None:
        self.out_count[LOCATION] += 1
        self.channel.broadcast(encode_location(payload))

    def _publish_account(self, payload: bytes, at_once: bool) -> None:
        self.out_count[ACCOUNT] += 1
        self.channel.broadcast(encode_account(payload), at_once)

    # -- in --
    def on_frame(self, frame: bytes) -> None:
        try:
            kind, flow, data = decode_frame(frame)
        except ChannelError:
            log.warning("worker_frame_dropped", size=len(frame))
            return
        self.in_count[kind] += 1
        if kind == DELIVER:
            if data[:7] == b"INVITE " and not _IN_DIALOG.search(data, 0, HEAD_SCAN):
                # a new call: routed after this batch, where the inbox can be read first (the
                # account state it decides on), as for a call read from the socket
                asyncio.get_running_loop().call_soon(self._route_invite, data, flow)
                return
            self._local(data, flow)
        elif kind == WRITE:
            assert flow is not None
            self._sip.transports.send_flow(data, flow)
        elif kind == ACCOUNT:
            if self.accounts is not None:
                self.accounts.receive(data)
        elif kind == GUARD:
            if self.guard is not None:
                self.guard.receive(data)
        elif kind == DRAINED:
            if data:
                self.drained.add(data[0])
        elif kind in (ADMIN_ASK, ADMIN_ANSWER):
            if self.admin is not None:
                self.admin.receive(kind, data)
        elif self.location is not None:
            self.location.receive(data)


class HandoffCollector:
    """This worker's hand-off counters as Prometheus metrics (kept per worker in the merged /metrics)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Any:
        w = self.worker
        handoffs = CounterMetricFamily(
            "sipcore_worker_handoffs",
            "Frames passed between worker processes (this worker's view), by direction and kind",
            labels=["direction", "kind"],
        )
        for direction, counts in (("out", w.out_count), ("in", w.in_count)):
            for kind, name in _KIND.items():
                handoffs.add_metric([direction, name], counts[kind])
        yield handoffs
        dropped = CounterMetricFamily(
            "sipcore_worker_handoffs_dropped", "Frames dropped: destination buffer full or unreadable"
        )
        dropped.add_metric([], w.channel.dropped)
        yield dropped
        backlog = GaugeMetricFamily("sipcore_worker_handoff_backlog", "Frames waiting for a full destination")
        backlog.add_metric([], w.channel.backlog)
        yield backlog
