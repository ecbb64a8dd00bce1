"""EDGE: publish low-balance crossings as a structured log line and a Prometheus counter."""

from __future__ import annotations

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from rating.events import LowBalanceCrossed

_log = structlog.get_logger("sipcore.rating")
_counters: dict[int, Counter] = {}


def low_balance_counter(registry: CollectorRegistry = REGISTRY) -> Counter:
    """sipcore_low_balance_crossings_total{customer}, created once per registry."""
    key = id(registry)
    if key not in _counters:
        _counters[key] = Counter(
            "sipcore_low_balance_crossings",
            "Times a customer's balance fell to or below its low-balance threshold",
            ["customer"],
            registry=registry,
        )
    return _counters[key]


def publish_low_balance(event: LowBalanceCrossed, registry: CollectorRegistry = REGISTRY) -> None:
    _log.warning(
        "low_balance_crossed",
        customer=event.customer_id,
        balance=str(event.balance),
        threshold=str(event.threshold),
        at=event.at.isoformat(),
    )
    low_balance_counter(registry).labels(customer=event.customer_id).inc()
