"""Building a process's tracker from its runtime: the event sink writes through
``record_events`` with the feedback policy of the settings."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tidings.delivery.runner import mail_links
from tidings.runtime import Runtime
from tidings.tracking.bounce_receiver import start_bounce_receiver
from tidings.tracking.endpoints import Tracker
from tidings.tracking.events import InboundEvent
from tidings.tracking.inbound import InboundMail
from tidings.tracking.ingest import EventSink
from tidings.tracking.machines import MachineDetector
from tidings.tracking.service import FeedbackPolicy, PlacementCache, record_events


def feedback_policy(runtime: Runtime) -> FeedbackPolicy:
    settings = runtime.settings
    return FeedbackPolicy(
        scanner_seconds=settings.tracking_scanner_seconds,
        soft_bounce_limit=settings.soft_bounce_limit,
        soft_bounce_days=settings.soft_bounce_days,
    )


def build_tracker(runtime: Runtime) -> Tracker:
    policy = feedback_policy(runtime)
    placements = PlacementCache()

    async def write(events: Sequence[InboundEvent]) -> None:
        async with runtime.database.sessions() as session:
            await record_events(session, events, policy, placements=placements)

    settings = runtime.settings
    return Tracker(
        links=mail_links(runtime),
        sink=EventSink(write, interval=settings.event_flush_seconds),
        database=runtime.database,
        machines=MachineDetector(settings.tracking_machine_networks),
    )


async def start_inbound_mail(runtime: Runtime, tracker: Tracker) -> asyncio.Server | None:
    """The SMTP receiver of bounces and ``mailto:`` unsubscribes, when a port is configured;
    it takes mail for the domains of the return path and of the unsubscribe address."""
    settings = runtime.settings
    if not settings.inbound_smtp_port:
        return None
    addresses = [a for a in (settings.bounce_address, settings.list_unsubscribe_mailto) if a]
    domains = {a.rpartition("@")[2] for a in addresses}
    if not domains:
        raise ValueError(
            "TIDINGS_INBOUND_SMTP_PORT needs TIDINGS_BOUNCE_ADDRESS or "
            "TIDINGS_LIST_UNSUBSCRIBE_MAILTO: mail to their domains is what it takes"
        )
    inbound = InboundMail(tracker.links, runtime.database, settings.list_unsubscribe_mailto)
    return await start_bounce_receiver(
        settings.inbound_smtp_host,
        settings.inbound_smtp_port,
        domains,
        tracker.sink.write_now,
        vouch=inbound.vouch,
        requests=inbound.requests,
    )
