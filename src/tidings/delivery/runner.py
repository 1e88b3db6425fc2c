"""Starting delivery workers from a runtime: the transport the settings name, the DKIM keys,
the retry policy, and the worker options."""

from __future__ import annotations

import asyncio

from tidings.delivery.compose import Composer, SenderIdentity
from tidings.delivery.links import MailLinks
from tidings.delivery.worker import DeliveryWorker, RetryPolicy, WorkerOptions
from tidings.runtime import Runtime
from tidings.transports.base import Transport
from tidings.transports.factory import open_transport, provider_transport


def mail_links(runtime: Runtime) -> MailLinks:
    return MailLinks(runtime.cipher.worker_args()[1], runtime.settings.base_url)


def build_worker(runtime: Runtime, transport: Transport | None = None) -> DeliveryWorker:
    settings = runtime.settings
    identity = SenderIdentity(
        links=mail_links(runtime),
        default_from=settings.mail_from,
        bounce_address=settings.bounce_address,
        unsubscribe_mailto=settings.list_unsubscribe_mailto,
    )
    policy = RetryPolicy(
        settings.retry_base_seconds, settings.retry_cap_seconds, settings.retry_max_attempts
    )
    options = WorkerOptions(
        batch_size=settings.worker_batch_size, lease_seconds=settings.worker_lease_seconds
    )
    return DeliveryWorker(
        runtime.database,
        transport or open_transport(settings),
        Composer(identity),
        policy,
        options,
        open_provider=lambda provider: provider_transport(provider, settings),
    )


async def run_worker(runtime: Runtime, stop: asyncio.Event) -> None:
    """Deliver until ``stop`` is set, then close the transport."""
    worker = build_worker(runtime)
    try:
        await worker.run(stop)
    finally:
        await worker.pool.close()
