"""Building a process's tracker from its runtime: the event sink writes through
``record_events`` with the feedback policy of the settings."""

from __future__ import annotations

from collections.abc import Sequence

from tidings.delivery.links import MailLinks
from tidings.runtime import Runtime
from tidings.tracking.endpoints import Tracker
from tidings.tracking.events import InboundEvent
from tidings.tracking.ingest import EventSink
from tidings.tracking.machines import MachineDetector
from tidings.tracking.service import FeedbackPolicy, record_events


def feedback_policy(runtime: Runtime) -> FeedbackPolicy:
    settings = runtime.settings
    return FeedbackPolicy(
        scanner_seconds=settings.tracking_scanner_seconds,
        soft_bounce_limit=settings.soft_bounce_limit,
        soft_bounce_days=settings.soft_bounce_days,
    )


def build_tracker(runtime: Runtime) -> Tracker:
    policy = feedback_policy(runtime)

    async def write(events: Sequence[InboundEvent]) -> None:
        async with runtime.database.sessions() as session:
            await record_events(session, events, policy)

    settings = runtime.settings
    return Tracker(
        links=MailLinks(runtime.cipher.worker_args()[1], settings.base_url),
        sink=EventSink(write, interval=settings.event_flush_seconds),
        database=runtime.database,
        machines=MachineDetector(settings.tracking_machine_networks),
    )
