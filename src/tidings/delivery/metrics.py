"""Prometheus counters of the delivery engine (served at ``/metrics``)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter

from tidings.campaigns.models import DeliveryStatus
from tidings.delivery.outbox import Outcome

DELIVERIES = Counter(
    "tidings_deliveries",
    "Deliveries finished or put back for a retry, by transport and result.",
    ["transport", "result"],
)
_RESULT = {
    DeliveryStatus.sent: "sent",
    DeliveryStatus.failed: "failed",
    DeliveryStatus.suppressed: "suppressed",
    DeliveryStatus.queued: "retried",
}


def count_outcomes(outcomes: Iterable[Outcome]) -> None:
    """By the provider that answered ("none": decided before sending, e.g. suppressed)."""
    for (provider, status), number in Tally((o.provider, o.status) for o in outcomes).items():
        DELIVERIES.labels(transport=provider or "none", result=_RESULT[status]).inc(number)
