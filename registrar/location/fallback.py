"""The Redis location store with a local fallback: registrations and lookups go on while Redis is
unreachable or too slow, and what was registered meanwhile is written back when it answers again.

Why: with ``location.backend: redis`` an outage of Redis (restart, failover, network) used to answer
every REGISTER ``500`` and make every registered phone unreachable. A carrier registrar keeps serving
from what it knows and reconciles later (Kamailio's usrloc ``db_mode: write-back`` does the same).

What this process knows (`local`, a `MemoryLocationStore` without a state file): every AOR it wrote
or read from Redis (the last copy it saw), plus what the other workers of this server publish when
they write an AOR (each REGISTER has one owning worker, `sipcore.ownership`: it publishes the AOR's
bindings after every change, so the worker that rings a phone knows what its owner registered).

Up: every operation goes to Redis (with a deadline, ``timeout``); the answer is kept in `local`.
A connection error, a deadline passed or a reply saying Redis cannot take writes (READONLY,
LOADING, MASTERDOWN) marks Redis down: logged once (``location_redis_down``), counted.
Down: REGISTERs are planned by the same pure rules over `local` and answered at once; the changed
binding keys and the removed ones are remembered per AOR (``dirty``); lookups answer from `local`.
A probe retries Redis every ``retry_interval`` (doubling to 10 s; one ``location_redis_retry`` line
each); when Redis answers, every dirty AOR is merged into what Redis holds
(`RedisLocationStore.write_back`: newest registration wins, expired ones dropped), then Redis is
marked up (``location_redis_up``, with the outage's duration and the AORs written back).

After a Redis Sentinel failover (``master_epoch`` changed: the client follows a new master), the AORs
this process wrote in the last ``replay_window`` seconds are written back to the new master the same
way: replication is asynchronous, so the last writes the old master took may never have reached the
replica that was promoted (or were taken by the old master after the promotion, before the client
noticed); the merge makes writing them again harmless.

What is lost or stale during an outage is stated in docs/location.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog
from prometheus_client import Counter, Gauge

from registrar.location.binding import Binding
from registrar.location.changes import OverflowPolicy, RegisterChanges
from registrar.location.events import BindingAdded, BindingRefreshed, BindingRemoved, LocationEvent
from registrar.location.memory import MemoryLocationStore
from registrar.location.redis_store import RedisLocationStore
from registrar.location.replicated import SNAPSHOT, ReplicationError, decode, encode_snapshot
from registrar.location.resp import RedisReplyError
from registrar.location.rules import ApplyResult
from sipcore.waiting import within

log = structlog.get_logger("sipcore.location")

REDIS_UP = Gauge("sipcore_location_redis_up", "1 while the location store reaches Redis (this process)")
OUTAGES = Counter("sipcore_location_redis_outages_total", "Times the location store lost Redis")
RETRIES = Counter("sipcore_location_redis_retries_total", "Probes of Redis while it was unreachable")
FALLBACK = Counter(
    "sipcore_location_fallback_total", "Location operations served locally while Redis was away", ["op"]
)
WRITTEN_BACK = Counter(
    "sipcore_location_written_back_total", "AORs registered during an outage and written back to Redis"
)
PENDING = Gauge("sipcore_location_pending_aors", "AORs registered during an outage, not yet in Redis")

# replies that mean "this Redis cannot serve writes now" (a replica after a failover, loading, no master)
_UNAVAILABLE = ("READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
T = TypeVar("T")


class _Down:
    """What `FallbackLocationStore._ask` answers when Redis could not."""


DOWN = _Down()
MAX_RETRY_INTERVAL = 10.0  # Redis back -> written back within this, at worst


def unavailable(exc: BaseException) -> bool:
    """Does ``exc`` mean Redis is unreachable (as opposed to a request it refused)?"""
    if isinstance(exc, RedisReplyError):
        return str(exc).startswith(_UNAVAILABLE)
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))


class _Dirty:
    """What this process changed in one AOR while Redis was away."""

    __slots__ = ("removed", "written")

    def __init__(self) -> None:
        self.written: dict[str, Binding] = {}
        self.removed: dict[str, float] = {}

    def record(self, events: tuple[LocationEvent, ...] | list[LocationEvent], now: float) -> None:
        for ev in events:
            if isinstance(ev, (BindingAdded, BindingRefreshed)):
                self.written[ev.binding.key] = ev.binding
                self.removed.pop(ev.binding.key, None)
            elif isinstance(ev, BindingRemoved):
                self.written.pop(ev.binding.key, None)
                self.removed[ev.binding.key] = now

    def absorb(self, later: _Dirty) -> None:
        """Take ``later``'s changes over ours (they happened after)."""
        for key, b in later.written.items():
            self.written[key] = b
            self.removed.pop(key, None)
        for key, at in later.removed.items():
            self.removed[key] = at
            self.written.pop(key, None)


class FallbackLocationStore:
    def __init__(
        self,
        redis: RedisLocationStore,
        *,
        index: int = 0,
        publish: Callable[[bytes], object] | None = None,
        timeout: float | None = 1.0,
        retry_interval: float = 2.0,
        on_reconnect: Callable[[], object] | None = None,
        master_epoch: Callable[[], int] | None = None,
        replay_window: float = 10.0,
    ) -> None:
        """``timeout``: a deadline per operation; None leaves it to the client's own watchdog (the
        server's case: `RespClient` fails what got no reply within its ``timeout``, without a timer
        per call). ``publish``: hands a message to the other workers of this server (None: one
        process).
        ``on_reconnect``: what to do before probing (a Sentinel client rediscovers its master).
        ``master_epoch``: how many times the client moved to another master (Sentinel), None: never."""
        self.redis = redis
        self.local = MemoryLocationStore(None)
        self.index = index
        self._publish = publish
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._on_reconnect = on_reconnect
        self.up = True
        self.down_since: float | None = None
        self.dirty: dict[str, _Dirty] = {}
        self._probe: asyncio.Task[None] | None = None
        self._master_epoch = master_epoch
        self._epoch = master_epoch() if master_epoch is not None else 0
        self.replay_window = replay_window
        self._recent: dict[str, tuple[float, _Dirty]] = {}  # AOR -> (last write, its recent changes)
        self._replay: asyncio.Task[None] | None = None
        self.replays = 0  # write-backs after a master switch, completed
        REDIS_UP.set(1)

    # -- the contract --------------------------------------------------------------------------------

    async def get(self, aor: str, now: float) -> list[Binding]:
        self._check_master()
        if self.up:
            bindings = await self._ask(self.redis.get(aor, now))
            if bindings is not DOWN:
                if aor not in self.dirty:
                    self.local.install(aor, tuple(bindings))
                return bindings
        FALLBACK.labels("lookup").inc()
        return self.local.lookup(aor, now)

    def lookup_cached(self, aor: str, now: float) -> list[Binding] | None:
        """Up: None (Redis is the truth, ask `get`). Down: the local view, at once."""
        if self.up:
            return None
        FALLBACK.labels("lookup").inc()
        return self.local.lookup(aor, now)

    def apply_now(self, aor: str, changes: RegisterChanges, now: float, max_contacts: int | None = None,
                  policy: OverflowPolicy = OverflowPolicy.REJECT) -> ApplyResult | None:  # fmt: skip
        """Down: applied locally at once (no I/O to wait for); up: None, ``await apply``."""
        if self.up:
            return None
        return self._apply_locally(aor, changes, now, max_contacts, policy)

    async def apply(
        self,
        aor: str,
        changes: RegisterChanges,
        now: float,
        max_contacts: int | None = None,
        policy: OverflowPolicy = OverflowPolicy.REJECT,
    ) -> ApplyResult:
        self._check_master()
        if self.up:
            result = await self._ask(self.redis.apply(aor, changes, now, max_contacts, policy))
            if result is not DOWN:  # a LocationError raised: the REGISTER's answer
                if result.events:
                    if aor not in self.dirty:
                        self._keep(aor, result.bindings)
                    if self._master_epoch is not None:
                        self._remember_recent(aor, result.events, now)
                return result
        return self._apply_locally(aor, changes, now, max_contacts, policy)

    async def remove_flow(self, connection_id: str) -> list[LocationEvent]:
        if self.up:
            events = await self._ask(self.redis.remove_flow(connection_id))
            if events is not DOWN:
                self.local.close_flow(connection_id)
                return events
        return self._close_flow_locally(connection_id, time.time())

    def remove_flow_now(self, connection_id: str) -> list[LocationEvent] | None:
        return None if self.up else self._close_flow_locally(connection_id, time.time())

    async def open(self, now: float) -> int:
        return 0

    async def expire(self, now: float) -> list[Binding]:
        self._check_master()
        self.local.sweep(now)
        if self.up:
            await self._ask(self.redis.expire(now))
            self._check_master()  # it may have reconnected to another master just now
        return []

    async def count_aors(self, now: float | None = None) -> int:
        if self.up and (n := await self._ask(self.redis.count_aors(now))) is not DOWN:
            return n
        return self.local.aor_count()

    async def count_contacts(self, now: float | None = None) -> int:
        if self.up and (n := await self._ask(self.redis.count_contacts(now))) is not DOWN:
            return n
        return self.local.contact_count()

    async def close(self) -> None:
        for task in (self._probe, self._replay):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.redis.close()

    def _bounded(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        return coro if self.timeout is None else within(coro, self.timeout)

    async def _ask(self, coro: Coroutine[Any, Any, T]) -> T | _Down:
        """Redis's answer, or DOWN when Redis is unavailable (and the store marked down); any other
        error (a LocationError: the request's own answer) is raised."""
        try:
            return await self._bounded(coro)
        except Exception as exc:
            if not unavailable(exc):
                raise
            self._went_down(exc)
            return DOWN

    # -- the other workers -------------------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        """An AOR another worker of this server wrote: kept as the last known copy."""
        try:
            message = decode(payload)
        except ReplicationError:
            log.warning("location_message_dropped", size=len(payload))
            return
        if message[0] == SNAPSHOT:
            _, _writer, aor, bindings = message  # type: ignore[misc]
            self.local.install(aor, bindings)  # type: ignore[arg-type]

    # -- internals -----------------------------------------------------------------------------------

    def _keep(self, aor: str, bindings: tuple[Binding, ...]) -> None:
        self.local.install(aor, bindings)
        if self._publish is not None:
            self._publish(encode_snapshot(self.index, aor, bindings))

    def _apply_locally(self, aor: str, changes: RegisterChanges, now: float, max_contacts: int | None,
                       policy: OverflowPolicy) -> ApplyResult:  # fmt: skip
        FALLBACK.labels("register").inc()
        result = self.local.register(aor, changes, now, max_contacts, policy)
        if result.events:
            self.dirty.setdefault(aor, _Dirty()).record(result.events, now)
            PENDING.set(len(self.dirty))
            if self._publish is not None:
                self._publish(encode_snapshot(self.index, aor, self.local.bindings_of(aor)))
        return result

    def _close_flow_locally(self, connection_id: str, now: float) -> list[LocationEvent]:
        FALLBACK.labels("flow_closed").inc()
        events = self.local.close_flow(connection_id)
        for ev in events:
            dirty = self.dirty.setdefault(ev.binding.aor, _Dirty())
            if isinstance(ev, BindingRemoved):
                dirty.record([ev], now)
            else:  # kept with a dead flow: written back as such
                kept = {b.key: b for b in self.local.bindings_of(ev.binding.aor)}
                if ev.binding.key in kept:
                    dirty.written[ev.binding.key] = kept[ev.binding.key]
        PENDING.set(len(self.dirty))
        return events

    def _remember_recent(self, aor: str, events: tuple[LocationEvent, ...], now: float) -> None:
        recent = self._recent
        entry = recent.pop(aor, None)
        changes = entry[1] if entry is not None else _Dirty()
        changes.record(events, now)
        at = time.monotonic()
        recent[aor] = (at, changes)
        while recent:  # oldest first (entries are re-inserted on every write)
            first = next(iter(recent))
            if recent[first][0] >= at - self.replay_window:
                break
            del recent[first]

    def _check_master(self) -> None:
        """The client moved to another master: write this process's recent changes to it again."""
        if self._master_epoch is None:
            return
        epoch = self._master_epoch()
        if epoch == self._epoch:
            return
        self._epoch = epoch
        recent, self._recent = self._recent, {}
        for aor, (_, changes) in recent.items():
            dirty = self.dirty.get(aor)
            if dirty is None:
                self.dirty[aor] = changes
            else:
                changes.absorb(dirty)
                self.dirty[aor] = changes
        PENDING.set(len(self.dirty))
        log.warning("location_redis_master_changed", replayed_aors=len(recent))
        if self.up and (self._replay is None or self._replay.done()):
            self._replay = asyncio.get_running_loop().create_task(self._replay_recent())

    async def _replay_recent(self) -> None:
        try:
            written = await self._write_back()
        except Exception as exc:
            if not unavailable(exc):
                log.error("location_write_back_failed", error=_describe(exc))
                return
            self._went_down(exc)  # the probe goes on writing back
            return
        self.replays += 1
        log.info("location_redis_replayed", written_back=written)

    def _went_down(self, exc: BaseException) -> None:
        if not self.up:
            return
        self.up = False
        self.down_since = time.time()
        REDIS_UP.set(0)
        OUTAGES.inc()
        log.warning("location_redis_down", error=_describe(exc), fallback="local")
        self._probe = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Probe Redis until it answers, write back what was registered meanwhile, then go up."""
        interval = self.retry_interval
        attempt = 0
        while True:
            await asyncio.sleep(interval)
            attempt += 1
            RETRIES.inc()
            try:
                if self._on_reconnect is not None:
                    await self._on_reconnect()  # type: ignore[misc]
                await within(self.redis.ping(), self.timeout or 5.0)
                written = await self._write_back()
            except Exception as exc:
                if not unavailable(exc):
                    log.error("location_write_back_failed", error=_describe(exc), attempt=attempt)
                else:
                    log.warning("location_redis_retry", attempt=attempt, error=_describe(exc),
                             pending_aors=len(self.dirty), next_in=min(interval * 2, MAX_RETRY_INTERVAL))  # fmt: skip
                interval = min(interval * 2, MAX_RETRY_INTERVAL)
                continue
            down_for = time.time() - (self.down_since or time.time())
            self.up = True
            self.down_since = None
            self._probe = None
            REDIS_UP.set(1)
            log.warning("location_redis_up", down_seconds=round(down_for, 3), written_back=written,
                        attempts=attempt)  # fmt: skip
            return

    async def _write_back(self) -> int:
        """Every dirty AOR merged into Redis; an AOR leaves ``dirty`` only once Redis has it. A
        REGISTER applied locally while this runs (still down) lands in ``dirty`` for the next round."""
        written = 0
        while self.dirty:
            aor = next(iter(self.dirty))
            dirty = self.dirty.pop(aor)
            try:
                merged = await self._bounded(
                    self.redis.write_back(aor, dirty.written, dirty.removed, time.time())
                )
            except BaseException:
                later = self.dirty.get(aor)
                if later is not None:  # registered again meanwhile: the later changes win
                    dirty.absorb(later)
                self.dirty[aor] = dirty
                raise
            if aor not in self.dirty:
                self._keep(aor, merged)
            written += 1
            WRITTEN_BACK.inc()
            PENDING.set(len(self.dirty))
        return written


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
