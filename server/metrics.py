"""Prometheus metrics of the SIP server (one definition per process, default registry).

Label children are cached in dicts so the per-message cost is one dict lookup and one increment.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("sipcore_requests_total", "SIP requests received, by method", ["method"])
RESPONSES_SENT = Counter("sipcore_responses_sent_total", "SIP responses sent, by status code", ["code"])
RESPONSES_RECEIVED = Counter(
    "sipcore_responses_received_total", "SIP responses received, by status code", ["code"]
)
PARSE_ERRORS = Counter(
    "sipcore_parse_errors_total", "Messages that failed to parse or validate, by outcome", ["outcome"]
)
DROPPED = Counter("sipcore_dropped_total", "Messages dropped without an answer, by reason", ["reason"])
TRANSACTIONS_ACTIVE = Gauge("sipcore_transactions_active", "SIP transactions in progress")
TCP_CONNECTIONS = Gauge("sipcore_tcp_connections", "Open SIP TCP connections")
KEEPALIVES = Counter("sipcore_keepalive_pings_total", "CRLF keep-alive pings answered")
GC_COLLECTED = Counter(
    "sipcore_gc_collected_total", "Objects freed by the periodic full collection (should stay near 0)"
)
GC_PAUSE = Histogram("sipcore_gc_pause_seconds", "Duration of the periodic full collections")
CONFIG_RELOADS = Counter("sipcore_config_reloads_total", "Configuration reloads, by outcome", ["outcome"])

_requests: dict[str, object] = {}
_responses: dict[int, object] = {}
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
    child.inc()  # type: ignore[attr-defined]


def count_response_sent(status: int) -> None:
    child = _responses.get(status)
    if child is None:
        child = RESPONSES_SENT.labels(str(status))
        _responses[status] = child
    child.inc()  # type: ignore[attr-defined]
