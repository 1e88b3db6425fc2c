"""Turning claimed deliveries into finished messages: per recipient, render (the campaign's
content compiled once per run and cached), assemble the MIME bytes, sign with the sending
domain's DKIM key.

A delivery that must not be sent (the subscriber left, or the address is suppressed since the
run was materialized) becomes ``suppressed``; one whose template fails for this subscriber
becomes ``failed`` with the template's error. Neither stops the rest of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from typing import Any
from urllib.parse import quote

from sqlalchemy import Text, exists, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import Subscriber, SubscriberStatus, Suppression
from tidings.campaigns.models import Campaign, CampaignRun, Channel, DeliveryStatus
from tidings.campaigns.templates import campaign_source, layout_loader
from tidings.campaigns.templating import (
    CompiledContent,
    RenderContext,
    TemplateProblem,
    compile_content,
)
from tidings.delivery.dkim import DkimSigner
from tidings.delivery.dkim_keys import load_signers
from tidings.delivery.links import MailLinks
from tidings.delivery.mime import MessageContent, MessageHeaders, build_message, message_id
from tidings.delivery.outbox import Claimed, Outcome
from tidings.logs import get_logger
from tidings.security.crypto import active_cipher
from tidings.transports.base import OutgoingMessage

log = get_logger(__name__)
YIELD_EVERY = 8  # messages composed between turns of the event loop (keeps SMTP sessions busy)
CACHED_RUNS = 100  # compiled contents kept; past that the cache starts again


@dataclass(frozen=True)
class SenderIdentity:
    """Instance-wide sending settings (from Settings)."""

    links: MailLinks
    default_from: str  # "Name <address>"
    bounce_address: str | None = None
    unsubscribe_mailto: str | None = None


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    email: str
    email_hash: str
    name: str
    attributes: dict[str, Any]
    tags: list[str]
    mailable: bool
    engagement_score: float = 0.0


@dataclass(frozen=True)
class RunContent:
    """What every message of one run shares, prepared once."""

    campaign_id: int
    campaign_name: str
    campaign_subject: str
    channel: str
    compiled: CompiledContent | None  # None: the content does not compile any more
    problem: str | None
    from_name: str
    from_address: str
    reply_to: str | None
    envelope_sender: str
    domain: str
    list_id: str
    feedback_id: str
    signer: DkimSigner | None


@dataclass
class PreparedBatch:
    """A claimed batch after composing: messages to send, and outcomes already decided."""

    claimed: list[Claimed]
    messages: list[OutgoingMessage]
    decided: list[Outcome]
    by_id: dict[int, Claimed]
    hashes: dict[int, str]  # delivery id -> the address's blind index (for suppressions)
    scores: dict[int, float] = field(default_factory=dict)  # delivery id -> engagement (routing)

    def keep_only(self, delivery_ids: set[int]) -> None:
        """Drop the deliveries this worker no longer holds (another worker took them over)."""
        self.claimed = [c for c in self.claimed if c.id in delivery_ids]
        self.messages = [m for m in self.messages if m.delivery_id in delivery_ids]
        self.decided = [o for o in self.decided if o.delivery.id in delivery_ids]

    def sendable(self) -> list[tuple[OutgoingMessage, float]]:
        """The messages to send, each with its recipient's engagement score."""
        return [(m, self.scores.get(m.delivery_id, 0.0)) for m in self.messages]


class Composer:
    def __init__(self, identity: SenderIdentity) -> None:
        self._identity = identity
        self._contents: dict[int, tuple[datetime, RunContent]] = {}

    async def prepare(
        self, session: AsyncSession, claimed: list[Claimed], now: datetime, parts: bool = False
    ) -> PreparedBatch:
        """The batch's messages; with ``parts``, each also keeps its parts (for APIs that take
        them: held for every message of the batches in flight, they cost memory)."""
        recipients = await load_recipients(session, {c.subscriber_id for c in claimed})
        contents = await self._run_contents(session, {c.run_id for c in claimed})
        batch = PreparedBatch(claimed, [], [], {c.id: c for c in claimed}, {})
        for number, delivery in enumerate(claimed, 1):
            if number % YIELD_EVERY == 0:  # let the SMTP replies of the batch being sent in
                await asyncio.sleep(0)
            recipient = recipients.get(delivery.subscriber_id)
            content = contents[delivery.run_id]
            if recipient is None or not recipient.mailable:
                reason = "the subscriber is no longer active or the address is suppressed"
                batch.decided.append(Outcome(delivery, DeliveryStatus.suppressed, reason))
                continue
            try:
                message = self.compose(content, delivery, recipient, now, parts)
            except TemplateProblem as exc:
                batch.decided.append(Outcome(delivery, DeliveryStatus.failed, str(exc)))
                continue
            except Exception as exc:  # a bug must cost one message, not hold the whole batch
                log.exception("delivery.compose_failed", delivery=delivery.id)
                reason = f"could not build the message: {type(exc).__name__}"
                batch.decided.append(Outcome(delivery, DeliveryStatus.failed, reason))
                continue
            batch.messages.append(message)
            batch.hashes[delivery.id] = recipient.email_hash
            batch.scores[delivery.id] = recipient.engagement_score
        return batch

    def compose(
        self,
        content: RunContent,
        delivery: Claimed,
        recipient: Recipient,
        now: datetime,
        parts: bool = False,
    ) -> OutgoingMessage:
        """One recipient's message; raises TemplateProblem when it cannot be rendered."""
        if content.compiled is None or content.channel != Channel.email.value:
            problem = content.problem or f"{content.channel} delivery is not available"
            raise TemplateProblem("html", problem)
        links = self._identity.links
        token = links.token(delivery.id)
        unsubscribe_url = links.unsubscribe_url(token)  # in the body and in the header
        rendered = content.compiled.render(
            RenderContext(
                subscriber_name=recipient.name,
                subscriber_email=recipient.email,
                campaign_name=content.campaign_name,
                campaign_subject=content.campaign_subject,
                unsubscribe_url=unsubscribe_url,
                preferences_url=links.preferences_url(token),
                view_in_browser_url=links.view_url(token),
                subscriber_attributes=recipient.attributes,
                subscriber_tags=recipient.tags,
            )
        )
        headers = MessageHeaders(
            from_address=content.from_address,
            from_name=content.from_name,
            to_address=recipient.email,
            subject=rendered.subject,
            message_id=message_id(delivery.id, content.domain),
            date=now,
            reply_to=content.reply_to,
            list_unsubscribe_url=unsubscribe_url,
            list_unsubscribe_mailto=self._unsubscribe_mailto(token),
            list_id=content.list_id,
            feedback_id=content.feedback_id,
        )
        data = build_message(headers, rendered.text, rendered.html)
        if content.signer is not None:
            data = content.signer.sign(data, now=int(now.timestamp()))
        kept = MessageContent(headers, rendered.text, rendered.html) if parts else None
        return OutgoingMessage(delivery.id, content.envelope_sender, recipient.email, data, kept)

    def _unsubscribe_mailto(self, token: str) -> str | None:
        address = self._identity.unsubscribe_mailto
        return f"mailto:{address}?subject={quote('unsubscribe ' + token)}" if address else None

    async def _run_contents(
        self, session: AsyncSession, run_ids: Iterable[int]
    ) -> dict[int, RunContent]:
        """The content of each run, compiled again only when its campaign changed."""
        rows = await session.execute(
            select(CampaignRun.id, Campaign)
            .join(Campaign, Campaign.id == CampaignRun.campaign_id)
            .where(CampaignRun.id.in_(sorted(run_ids)))
        )
        contents: dict[int, RunContent] = {}
        if len(self._contents) > CACHED_RUNS:
            self._contents.clear()
        for run_id, campaign in rows:
            cached = self._contents.get(run_id)
            if cached is None or cached[0] != campaign.updated_at:
                cached = (campaign.updated_at, await self._run_content(session, run_id, campaign))
                self._contents[run_id] = cached
            contents[run_id] = cached[1]
        return contents

    async def _run_content(
        self, session: AsyncSession, run_id: int, campaign: Campaign
    ) -> RunContent:
        default_name, default_address = parseaddr(self._identity.default_from)
        from_address = campaign.from_email or default_address
        domain = _ascii_domain(from_address.rpartition("@")[2]) or "localhost"
        signers = await load_signers(session)  # once per run: a new key takes effect
        compiled, problem = None, None
        try:
            source = await campaign_source(session, campaign)
            compiled = compile_content(source, await layout_loader(session))
        except TemplateProblem as exc:
            problem = str(exc)
        return RunContent(
            campaign_id=campaign.id,
            campaign_name=campaign.name,
            campaign_subject=campaign.subject,
            channel=campaign.channel,
            compiled=compiled,
            problem=problem,
            from_name=campaign.from_name or default_name,
            from_address=from_address,
            reply_to=campaign.reply_to,
            envelope_sender=self._identity.bounce_address or from_address,
            domain=domain,
            list_id=f"<campaign-{campaign.id}.{domain}>",
            feedback_id=f"{campaign.id}:{run_id}:campaign:tidings",
            signer=signers.get(domain),
        )


def _ascii_domain(domain: str) -> str:
    """The domain as DKIM keys are stored: lower case, an IDN in its punycode form."""
    try:
        return domain.lower().encode("idna").decode("ascii")
    except UnicodeError:
        return domain.lower()


async def load_recipients(
    session: AsyncSession, subscriber_ids: Iterable[int]
) -> dict[int, Recipient]:
    """The subscribers of a batch, and whether they may be mailed now. The addresses are read
    encrypted and decrypted in one batch (several times faster than one by one)."""
    suppressed = exists().where(Suppression.email_hash == Subscriber.email_hash)
    rows = (
        await session.execute(
            select(
                Subscriber.id,
                type_coerce(Subscriber.email, Text()),
                Subscriber.email_hash,
                Subscriber.name,
                Subscriber.attributes,
                Subscriber.tags,
                (Subscriber.status == SubscriberStatus.active.value) & ~suppressed,
                Subscriber.engagement_score,
            ).where(Subscriber.id.in_(sorted(subscriber_ids)))
        )
    ).all()
    emails = active_cipher().decrypt_many([row[1] for row in rows])
    return {
        key: Recipient(key, email, email_hash, name, attributes, tags, bool(mailable), score or 0.0)
        for (key, _, email_hash, name, attributes, tags, mailable, score), email in zip(
            rows, emails, strict=True
        )
    }
