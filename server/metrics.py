"""Prometheus metrics of the SIP server (one definition per process, default registry).

Per-message counters are `FastCounter`s: plain integers bumped on the event loop and turned into
Prometheus samples only when scraped. Why: a prometheus_client counter takes a lock per increment
and its ``labels()`` call builds a key each time (measured ~1.5 µs for the pair, several per message,
~25 µs per REGISTER round trip); a cell's increment is one attribute add. They are incremented from
the event-loop thread only (the scrape runs there too), so no lock is needed.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric


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


REQUESTS = FastCounter("sipcore_requests_total", "SIP requests received, by method", ["method"])
RESPONSES_SENT = FastCounter("sipcore_responses_sent_total", "SIP responses sent, by status code", ["code"])
RESPONSES_RECEIVED = FastCounter(
    "sipcore_responses_received_total", "SIP responses received, by status code", ["code"]
)
PARSE_ERRORS = FastCounter(
    "sipcore_parse_errors_total", "Messages that failed to parse or validate, by outcome", ["outcome"]
)
DROPPED = FastCounter("sipcore_dropped_total", "Messages dropped without an answer, by reason", ["reason"])
TRANSACTIONS_ACTIVE = Gauge("sipcore_transactions_active", "SIP transactions in progress")
TCP_CONNECTIONS = Gauge("sipcore_tcp_connections", "Open SIP TCP connections")
KEEPALIVES = FastCounter("sipcore_keepalive_pings_total", "CRLF keep-alive pings answered")
GC_COLLECTED = Counter(
    "sipcore_gc_collected_total", "Objects freed by the periodic full collection (should stay near 0)"
)
GC_PAUSE = Histogram("sipcore_gc_pause_seconds", "Duration of the periodic full collections")
CONFIG_RELOADS = Counter("sipcore_config_reloads_total", "Configuration reloads, by outcome", ["outcome"])

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
