"""Turning claimed deliveries into finished messages: per recipient, render (the campaign's
content compiled once per run and cached), assemble the MIME bytes, sign with the sending
domain's DKIM key.

A delivery that must not be sent (the subscriber left, or the address is suppressed since the
run was materialized) becomes ``suppressed``; one whose template fails for this subscriber
becomes ``failed`` with the template's error. Neither stops the rest of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from typing import Any, NamedTuple
from urllib.parse import quote

from sqlalchemy import Text, exists, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.models import (
    Subscriber,
    SubscriberStatus,
    Suppression,
    TopicSubscription,
    TopicSubscriptionStatus,
)
from tidings.campaigns.audience import Audience
from tidings.campaigns.models import Campaign, CampaignRun, Channel, DeliveryStatus
from tidings.campaigns.templates import campaign_source, layout_loader
from tidings.campaigns.templating import (
    CompiledContent,
    RenderContext,
    RenderedMessage,
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
from tidings.tracking.links import LinkRegistry, rewrite_links, trackable_urls, with_open_pixel
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
    topic_ids: frozenset[int] = frozenset()  # the audience's topics: leaving them all stops it
    track_opens: bool = True
    track_clicks: bool = True
    utm: Mapping[str, str] = field(default_factory=dict)


class Draft(NamedTuple):
    """A recipient's rendered message, before its links are counted and its MIME is built."""

    content: RunContent
    delivery: Claimed
    recipient: Recipient
    rendered: RenderedMessage
    token: str  # the delivery's link token (unsubscribe, preferences, view)


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
    def __init__(self, identity: SenderIdentity, links: LinkRegistry | None = None) -> None:
        self._identity = identity
        self._links = links or LinkRegistry()
        self._contents: dict[int, tuple[datetime, RunContent]] = {}

    async def prepare(
        self, session: AsyncSession, claimed: list[Claimed], now: datetime, parts: bool = False
    ) -> PreparedBatch:
        """The batch's messages; with ``parts``, each also keeps its parts (for APIs that take
        them: held for every message of the batches in flight, they cost memory)."""
        recipients = await load_recipients(session, {c.subscriber_id for c in claimed})
        contents = await self._run_contents(session, {c.run_id for c in claimed})
        topics = await _topic_members(session, recipients, contents.values())
        batch = PreparedBatch(claimed, [], [], {c.id: c for c in claimed}, {})
        drafts: list[Draft] = []
        for delivery in claimed:
            recipient = recipients.get(delivery.subscriber_id)
            content = contents[delivery.run_id]
            if recipient is None or not recipient.mailable:
                reason = "the subscriber is no longer active or the address is suppressed"
                batch.decided.append(Outcome(delivery, DeliveryStatus.suppressed, reason))
            elif content.topic_ids and not content.topic_ids & topics.get(recipient.id, set()):
                reason = "the subscriber has left the campaign's topics"
                batch.decided.append(Outcome(delivery, DeliveryStatus.suppressed, reason))
            elif (draft := self._draft(content, delivery, recipient, batch)) is not None:
                drafts.append(draft)
        clicks = await self._click_links(session, drafts)
        for number, draft in enumerate(drafts, 1):
            if number % YIELD_EVERY == 0:  # let the SMTP replies of the batch being sent in
                await asyncio.sleep(0)
            try:
                links = clicks.get(draft.content.campaign_id, {})
                message = self.assemble(draft, links, now, parts)
            except Exception as exc:  # a bug must cost one message, not hold the whole batch
                log.exception("delivery.compose_failed", delivery=draft.delivery.id)
                reason = f"could not build the message: {type(exc).__name__}"
                batch.decided.append(Outcome(draft.delivery, DeliveryStatus.failed, reason))
                continue
            batch.messages.append(message)
            batch.hashes[draft.delivery.id] = draft.recipient.email_hash
            batch.scores[draft.delivery.id] = draft.recipient.engagement_score
        return batch

    def _draft(
        self, content: RunContent, delivery: Claimed, recipient: Recipient, batch: PreparedBatch
    ) -> Draft | None:
        """The recipient's rendered message, or None (and a failed outcome) if it won't render."""
        token = self._identity.links.token(delivery.id)
        try:
            rendered = self.render(content, recipient, token)
            return Draft(content, delivery, recipient, rendered, token)
        except TemplateProblem as exc:
            batch.decided.append(Outcome(delivery, DeliveryStatus.failed, str(exc)))
        except Exception as exc:  # a bug must cost one message, not hold the whole batch
            log.exception("delivery.render_failed", delivery=delivery.id)
            reason = f"could not build the message: {type(exc).__name__}"
            batch.decided.append(Outcome(delivery, DeliveryStatus.failed, reason))
        return None

    def render(self, content: RunContent, recipient: Recipient, token: str) -> RenderedMessage:
        """One recipient's subject and bodies; raises TemplateProblem when they won't render."""
        if content.compiled is None or content.channel != Channel.email.value:
            problem = content.problem or f"{content.channel} delivery is not available"
            raise TemplateProblem("html", problem)
        links = self._identity.links
        return content.compiled.render(
            RenderContext(
                subscriber_name=recipient.name,
                subscriber_email=recipient.email,
                campaign_name=content.campaign_name,
                campaign_subject=content.campaign_subject,
                unsubscribe_url=links.unsubscribe_url(token),
                preferences_url=links.preferences_url(token),
                view_in_browser_url=links.view_url(token),
                subscriber_attributes=recipient.attributes,
                subscriber_tags=recipient.tags,
            )
        )

    async def _click_links(
        self, session: AsyncSession, drafts: list[Draft]
    ) -> dict[int, dict[str, int]]:
        """Per campaign that counts clicks, the link id of every URL its drafts link to."""
        urls: dict[int, dict[str, None]] = {}
        for draft in drafts:
            if draft.content.track_clicks and draft.rendered.html:
                found = trackable_urls(draft.rendered.html, self._identity.links.is_ours)
                urls.setdefault(draft.content.campaign_id, {}).update(dict.fromkeys(found))
        utm = {d.content.campaign_id: d.content.utm for d in drafts}
        return {
            campaign_id: await self._links.ids(session, campaign_id, list(found), utm[campaign_id])
            for campaign_id, found in urls.items()
            if found
        }

    def assemble(
        self, draft: Draft, link_ids: Mapping[str, int], now: datetime, parts: bool = False
    ) -> OutgoingMessage:
        """The finished message: links counted, pixel added, headers, MIME, DKIM; with
        ``parts``, it keeps its parts too."""
        content, delivery, recipient, rendered, token = draft
        links = self._identity.links
        unsubscribe_url = links.unsubscribe_url(token)
        markup = rendered.html
        if markup and link_ids:

            def click_url(url: str) -> str | None:
                link_id = link_ids.get(url)
                return None if link_id is None else links.click_url(delivery.id, link_id)

            markup = rewrite_links(markup, click_url)
        if markup and content.track_opens:
            markup = with_open_pixel(markup, links.open_url(delivery.id))
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
        data = build_message(headers, rendered.text, markup)
        if content.signer is not None:
            data = content.signer.sign(data, now=int(now.timestamp()))
        kept = MessageContent(headers, rendered.text, markup) if parts else None
        envelope = content.envelope_sender
        if self._identity.bounce_address:  # VERP: reports name their delivery, signed
            envelope = links.return_path(self._identity.bounce_address, delivery.id)
        return OutgoingMessage(delivery.id, envelope, recipient.email, data, kept)

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
            topic_ids=frozenset(Audience.from_json(campaign.audience).topic_ids),
            track_opens=campaign.track_opens,
            track_clicks=campaign.track_clicks,
            utm=dict(campaign.utm or {}),
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


async def _topic_members(
    session: AsyncSession, recipients: Mapping[int, Recipient], contents: Collection[RunContent]
) -> dict[int, set[int]]:
    """For the batch's subscribers, the topics (of its runs' audiences) they are still in."""
    topic_ids = set().union(*(c.topic_ids for c in contents))
    if not topic_ids or not recipients:
        return {}
    rows = await session.execute(
        select(TopicSubscription.subscriber_id, TopicSubscription.topic_id).where(
            TopicSubscription.subscriber_id.in_(sorted(recipients)),
            TopicSubscription.topic_id.in_(sorted(topic_ids)),
            TopicSubscription.status == TopicSubscriptionStatus.active.value,
        )
    )
    members: dict[int, set[int]] = {}
    for subscriber_id, topic_id in rows:
        members.setdefault(subscriber_id, set()).add(topic_id)
    return members
