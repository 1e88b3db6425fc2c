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


def count_outcomes(transport: str, outcomes: Iterable[Outcome]) -> None:
    for status, number in Tally(o.status for o in outcomes).items():
        DELIVERIES.labels(transport=transport, result=_RESULT[status]).inc(number)
