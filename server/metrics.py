"""Prometheus metrics of the SIP server (one definition per process, default registry).

Per-message counters are `FastCounter`s: plain integers bumped on the event loop and turned into
Prometheus samples only when scraped. Why: a prometheus_client counter takes a lock per increment
and its ``labels()`` call builds a key each time (measured ~1.5 µs for the pair, several per message,
~25 µs per REGISTER round trip); a cell's increment is one attribute add. They are incremented from
the event-loop thread only (the scrape runs there too), so no lock is needed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString


class Cell:
    """One labelled series of a FastCounter."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class FastCounter:
    """A counter family of plain-integer cells, exported at scrape time (same exposition as a
    prometheus_client Counter: ``NAME_total{label="..."}``)."""

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...] | list[str] = (),
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:  # fmt: skip
        self.name = name[:-6] if name.endswith("_total") else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._cells: dict[tuple[str, ...], Cell] = {}
        self._plain = Cell()  # the unlabelled series
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> Cell:
        cell = self._cells.get(values)
        if cell is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            cell = self._cells[values] = Cell()
        return cell

    def inc(self, amount: int = 1) -> None:
        self._plain.value += amount

    def value(self, *values: str) -> int:
        """Current count of one series (tests, health)."""
        if not values:
            return self._plain.value
        cell = self._cells.get(values)
        return cell.value if cell is not None else 0

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if self.labelnames:
            for values, cell in list(self._cells.items()):
                family.add_metric(values, cell.value)
        else:
            family.add_metric((), self._plain.value)
        yield family


class StatsCounter:
    """A counter family read at scrape time from a function: for plain integers the pure layers keep
    (``TransportStats``), which must not import prometheus."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] | list[str]) -> None:
        self.name = name[:-6] if name.endswith("_total") else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._read: Callable[[], dict[tuple[str, ...], int]] = dict
        REGISTRY.register(self)

    def set_function(self, read: Callable[[], dict[tuple[str, ...], int]]) -> None:
        self._read = read

    def value(self, *values: str) -> int:
        """Current count of one series (tests, health)."""
        return self._read().get(values, 0)

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, count in self._read().items():
            family.add_metric(values, count)
        yield family


REQUESTS = FastCounter("sipcore_requests_total", "SIP requests received, by method", ["method"])
RESPONSES_SENT = FastCounter("sipcore_responses_sent_total", "SIP responses sent, by status code", ["code"])
RESPONSES_RECEIVED = FastCounter(
    "sipcore_responses_received_total", "SIP responses received, by status code", ["code"]
)
PARSE_ERRORS = FastCounter(
    "sipcore_parse_errors_total", "Messages that failed to parse or validate, by outcome", ["outcome"]
)
for _outcome in ("answered", "dropped", "framing", "internal_error"):  # present from the start
    PARSE_ERRORS.labels(_outcome)
DROPPED = FastCounter("sipcore_dropped_total", "Messages dropped without an answer, by reason", ["reason"])
UDP_SEND_FAILED = StatsCounter(
    "sipcore_udp_send_failed_total",
    "Datagrams not sent: not_ip (the destination is a name or malformed, refused before the socket), "
    "error (the socket refused it)",
    ["reason"],
)
UDP_RECEIVE_DROPPED = StatsCounter(
    "sipcore_udp_receive_dropped_total",
    "Datagrams the kernel dropped at a UDP socket of the server because its receive queue was full "
    "(server.limits.udp_receive_buffer), by listening address and socket (kernel inode: one per "
    "worker with udp_steering, one shared otherwise)",
    ["address", "socket"],
)
TRANSACTIONS_ACTIVE = Gauge("sipcore_transactions_active", "SIP transactions in progress")
TRANSACTIONS_REFUSED = FastCounter(
    "sipcore_transactions_refused_total",
    "New requests refused 503 statelessly: the server transaction table was full of transactions "
    "in progress, none lingering (server.limits.max_server_transactions)",
)
TRANSACTIONS_ENDED_EARLY = StatsCounter(
    "sipcore_transactions_ended_early_total",
    "Server transactions past their final response ended before their 64*T1 linger: the table was "
    "full (server.limits.max_server_transactions) and a new request took the oldest one's place",
    [],
)
SECURE_EVENTS = StatsCounter(
    "sipcore_secure_transport_events_total",
    "TLS and WebSocket events: tls_handshake (completed), tls_handshake_failed (plain text on the TLS "
    "port, bad certificate, time-out), tls_outbound_failed, ws_upgraded, ws_refused (bad upgrade "
    "request), ws_too_big (closed 1009), ws_protocol_error (closed 1002)",
    ["event"],
)


def secure_events(stats: Any) -> dict[tuple[str, ...], int]:
    """SECURE_EVENTS' series from sipcore.transport_secure.SecureStats."""
    return {
        ("tls_handshake",): stats.tls_handshakes,
        ("tls_handshake_failed",): stats.tls_handshake_failed,
        ("tls_outbound_failed",): stats.tls_outbound_failed,
        ("ws_upgraded",): stats.ws_upgraded,
        ("ws_refused",): stats.ws_refused,
        ("ws_too_big",): stats.ws_closed_too_big,
        ("ws_protocol_error",): stats.ws_protocol_errors,
    }


TCP_CONNECTIONS = Gauge("sipcore_tcp_connections", "Open SIP TCP connections")
TCP_CONNECTION_CAP = Gauge(
    "sipcore_tcp_connection_cap", "Inbound SIP TCP connections allowed (summed over workers: the server's)"
)
TCP_REFUSED = StatsCounter(
    "sipcore_tcp_refused_total",
    "Inbound TCP connections refused (closed at once): cap (the server's connection cap reached), "
    "per_source (server.limits.max_tcp_connections_per_ip reached)",
    ["reason"],
)
TCP_CLOSED = StatsCounter(
    "sipcore_tcp_closed_total",
    "TCP connections closed by the server: idle, message_timeout (a message not finished in time, or "
    "nothing sent after connecting), too_slow (a message below the minimum byte rate)",
    ["reason"],
)
KEEPALIVES = FastCounter("sipcore_keepalive_pings_total", "CRLF keep-alive pings answered")
GC_COLLECTED = Counter(
    "sipcore_gc_collected_total",
    "Objects freed by the periodic collections, by kind: young (4 a second) or full (hourly); "
    "should stay near 0",
    ["kind"],
)
GC_PAUSE = Histogram(
    "sipcore_gc_pause_seconds",
    "Duration of the periodic collections, by kind: young (4 a second) or full (hourly)",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CONFIG_RELOADS = Counter("sipcore_config_reloads_total", "Configuration reloads, by outcome", ["outcome"])
for _outcome in ("applied", "refused"):  # both series present from the start (alert rules)
    CONFIG_RELOADS.labels(_outcome)

_requests: dict[str, Cell] = {}
_responses: dict[int, Cell] = {}
_responses_received: dict[int, Cell] = {}
_KNOWN_METHODS = frozenset(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    ]
)


def count_request(method: str) -> None:
    child = _requests.get(method)
    if child is None:
        child = REQUESTS.labels(method if method in _KNOWN_METHODS else "other")
        _requests[method] = child
    child.value += 1


def count_response_sent(status: int) -> None:
    child = _responses.get(status)
    if child is None:
        child = RESPONSES_SENT.labels(str(status))
        _responses[status] = child
    child.value += 1


def count_response_received(status: int) -> None:
    child = _responses_received.get(status)
    if child is None:
        child = RESPONSES_RECEIVED.labels(str(status))
        _responses_received[status] = child
    child.value += 1


# ---- histograms ----------------------------------------------------------------------------------------
SIP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds, for SIP: a REGISTER or a rating answered in about a millisecond up to a call ringing for a
minute before its 200."""


class HistogramCell:
    """One labelled series of a FastHistogram: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class FastHistogram:
    """A histogram family of plain cells (no lock: event-loop thread only), exported at scrape time
    with the exposition of a prometheus_client Histogram (``_bucket{le=...}``, ``_sum``, ``_count``)."""

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...] | list[str] = (),
        buckets: tuple[float, ...] = SIP_BUCKETS, registry: CollectorRegistry | None = REGISTRY,
    ) -> None:  # fmt: skip
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(sorted(buckets))
        self._cells: dict[tuple[str, ...], HistogramCell] = {}
        if not self.labelnames:
            self._cells[()] = HistogramCell(self.bounds)
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> HistogramCell:
        cell = self._cells.get(values)
        if cell is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            cell = self._cells[values] = HistogramCell(self.bounds)
        return cell

    def observe(self, value: float) -> None:
        self._cells[()].observe(value)

    def count(self, *values: str) -> int:
        cell = self._cells.get(values)
        return sum(cell.counts) if cell is not None else 0

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, cell in list(self._cells.items()):
            running, buckets = 0, []
            for bound, n in zip((*cell.bounds, float("inf")), cell.counts, strict=True):
                running += n
                buckets.append((floatToGoString(bound), running))
            family.add_metric(list(values), buckets, cell.sum)
        yield family


REGISTER_SECONDS = FastHistogram(
    "sipcore_register_duration_seconds", "REGISTER handling: request read to answer sent"
)
CALL_SETUP_SECONDS = FastHistogram(
    "sipcore_call_setup_seconds",
    "Call setup: INVITE received to the first 18x (stage=ringing) or to the 200 (stage=answer) relayed",
    ["stage"],
)
RATING_SECONDS = FastHistogram(
    "sipcore_rating_duration_seconds", "Rating: authorisation at call setup and settlement at call end",
    ["operation"],
)  # fmt: skip


# ---- whole-server figures that cost nothing per message ---------------------------------------------
class ResponseClassCollector:
    """Responses sent and received by code class (1xx…6xx), summed from the per-code cells at scrape
    time."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for source, name, doc in (
            (RESPONSES_SENT, "sipcore_responses_sent_by_class", "SIP responses sent, by code class"),
            (RESPONSES_RECEIVED, "sipcore_responses_received_by_class", "SIP responses received, by code class"),
        ):  # fmt: skip
            totals = {f"{n}xx": 0 for n in range(1, 7)}
            for (code,), cell in list(source._cells.items()):
                key = f"{code[:1]}xx"
                if key in totals:
                    totals[key] += cell.value
            family = CounterMetricFamily(name, doc, labels=["class"])
            for key, value in totals.items():
                family.add_metric([key], value)
            yield family


REGISTRY.register(ResponseClassCollector())

CONFIG_RELOAD_LAST_SUCCESS = Gauge(
    "sipcore_config_last_reload_success_timestamp_seconds",
    "Unix time of the last configuration reload applied (0: none since start)",
)
BUILD_INFO = Gauge("sipcore_build_info", "sipcore build: version, Python, C extensions loaded",
                   ["version", "python", "c_extensions"])  # fmt: skip


def set_build_info() -> None:
    """Once the C extensions are known (the registrar's start)."""
    import platform

    from sipcore import speedups

    try:
        from importlib.metadata import version

        ours = version("sipcore")
    except Exception:
        ours = "unknown"
    BUILD_INFO.clear()
    BUILD_INFO.labels(ours, platform.python_version(), ",".join(sorted(speedups.LOADED)) or "none").set(1)


# ---- one /metrics for every worker ---------------------------------------------------------------------
PER_WORKER_PREFIXES = ("process_", "python_", "sipcore_worker_", "sipcore_gc_")
"""Families kept per worker process (a ``worker`` label) instead of summed."""
MAX_FAMILIES = frozenset(
    {
        "sipcore_build_info",
        "sipcore_registered_aors",  # every worker sees the whole registry (replicas or Redis)
        "sipcore_registered_contacts",
        "sipcore_bans_active",  # every worker holds every ban (server/guard_share.py)
        "sipcore_config_last_reload_success_timestamp_seconds",
        "sipcore_udp_receive_dropped",  # a socket the workers share is reported by each of them
    }
)
"""Families whose series every worker reports alike (gauges of the whole server, a socket the workers
share): the largest is kept, not the sum."""


def merge_expositions(texts: dict[int, str]) -> bytes:
    """One exposition for the whole server from each worker's (``{worker index: text}``): samples of
    the same name and labels are summed (maximum for `MAX_FAMILIES`), `PER_WORKER_PREFIXES` families
    kept apart by a ``worker`` label; ``_created`` samples are left out (a sum of them means nothing)."""
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.samples import Sample

    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for index in sorted(texts):
        for fam in text_string_to_metric_families(texts[index]):
            out = families.get(fam.name)
            if out is None:
                out = families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            per_worker = fam.name.startswith(PER_WORKER_PREFIXES)
            keep_max = fam.name in MAX_FAMILIES
            acc = values[fam.name]
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                labels = dict(s.labels)
                if per_worker:
                    labels["worker"] = str(index)
                key = (s.name, tuple(sorted(labels.items())))
                if key not in acc:
                    acc[key] = s.value
                elif keep_max:
                    acc[key] = max(acc[key], s.value)
                else:
                    acc[key] += s.value
    for name, out in families.items():
        out.samples = [Sample(n, dict(lbl), v) for (n, lbl), v in values[name].items()]

    class _Merged:
        def collect(self) -> Iterator[Metric]:
            yield from families.values()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)


def timed(func: Any, operation: str) -> Any:
    """``func`` with its duration observed in `RATING_SECONDS` (``operation``: authorise, settle): the
    billing adapter's calls, timed where the proxy is given them."""
    cell = RATING_SECONDS.labels(operation)
    clock = perf_counter

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return func(*args, **kwargs)
        finally:
            cell.observe(clock() - started)

    return wrapper
