"""Demo data (`tidings demo`, seed 003's POST /seed): a realistic audience to look at at once.

Everything is deterministic and idempotent: running it again updates the same demo rows
instead of adding more. Subscribers go in through the bulk importer, like any other list.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.audience.importer import ImportOptions, run_import, start_import
from tidings.audience.models import Segment, Subscriber, SubscriberStatus, Topic
from tidings.audience.schemas import SegmentWrite, TopicCreate
from tidings.audience.segments import create_segment
from tidings.audience.topics import create_topic
from tidings.db.types import utcnow
from tidings.promotions.models import Promotion, PromotionStatus
from tidings.promotions.schemas import PromotionCreate
from tidings.promotions.service import change_promotion_status, create_promotion
from tidings.runtime import Runtime

DEMO_DOMAIN = "demo.tidings.example"
TAGS = ("retail", "tech", "finance")
CITIES = ("Berlin", "Lisbon", "Austin", "Osaka", "Nairobi", "Toronto", "Melbourne")
TIMEZONES = (
    "Europe/Berlin",
    "Europe/Lisbon",
    "America/Chicago",
    "Asia/Tokyo",
    "Africa/Nairobi",
    "America/Toronto",
    "Australia/Melbourne",
)
FIRST = (
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Emeka",
    "Fatima",
    "Goran",
    "Hana",
    "Ivan",
    "Julia",
    "Kenji",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
)
LAST = ("Silva", "Müller", "Kim", "Okafor", "Novak", "Haddad", "Tanaka", "Rossi", "Larsen")
TOPICS = (
    ("Weekly digest", "The week's best, every Monday.", "single"),
    ("Product news", "Launches and changelogs.", "double"),
    ("Deals", "Discounts for subscribers.", "single"),
)
SEGMENTS = {
    "Engaged tech": {
        "all": [
            {"field": "tag", "op": "eq", "value": "tech"},
            {"field": "engagement_score", "op": "gt", "value": 60},
        ]
    },
    "Retail on paid plans": {
        "all": [
            {"field": "tag", "op": "eq", "value": "retail"},
            {"field": "attributes.plan", "op": "in", "value": ["pro", "team"]},
        ]
    },
    "Joined this month": {"field": "created_at", "op": "within_days", "value": 30},
}


@dataclass(frozen=True)
class DemoSummary:
    subscribers: int
    topics: int
    promotions: int
    segments: int


def demo_csv(count: int) -> bytes:
    rng = random.Random(2026)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["email", "name", "tags", "timezone", "city", "plan", "company_size"])
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        place = rng.randrange(len(CITIES))
        tags = ";".join(sorted(rng.sample(TAGS, rng.choice((1, 1, 2, 3)))))
        writer.writerow(
            [
                f"{first.lower()}.{i}@{DEMO_DOMAIN}",
                f"{first} {last}",
                tags,
                TIMEZONES[place],
                CITIES[place],
                rng.choice(("free", "free", "pro", "team")),
                rng.choice((1, 10, 50, 250, 1000)),
            ]
        )
    return buffer.getvalue().encode()


async def seed_demo(runtime: Runtime, actor: str, subscribers: int = 3000) -> DemoSummary:
    options = ImportOptions(mode="upsert", dedupe=True)
    async with runtime.database.sessions() as session:
        topic_ids = [await _topic(session, *spec, actor) for spec in TOPICS]
        job = await start_import(session, "demo", None, options, actor)
    await run_import(
        runtime.database, runtime.cipher, job, io.BytesIO(demo_csv(subscribers)), options
    )
    async with runtime.database.sessions() as session:
        await _shape_audience(session, topic_ids)
        promotions = await _promotions(session, actor)
        for name, rule in SEGMENTS.items():
            if await session.scalar(select(Segment.id).where(Segment.name == name)) is None:
                await create_segment(session, SegmentWrite(name=name, rule=rule), actor)
        await _subscribe_to_promotion(session, promotions[PromotionStatus.active])
        demo_count = await session.scalar(
            select(func.count())
            .select_from(Subscriber)
            .where(Subscriber.email_domain == DEMO_DOMAIN)
        )
    return DemoSummary(int(demo_count or 0), len(topic_ids), len(promotions), len(SEGMENTS))


async def _topic(session: AsyncSession, name: str, description: str, optin: str, actor: str) -> int:
    existing = await session.scalar(select(Topic.id).where(Topic.name == name))
    if existing is not None:
        return existing
    data = TopicCreate(name=name, description=description, optin=optin)
    return (await create_topic(session, data, actor)).id


async def _shape_audience(session: AsyncSession, topic_ids: list[int]) -> None:
    """Spread sign-up dates, engagement, statuses and topic memberships over the demo rows."""
    now = utcnow()
    ids = (
        await session.scalars(select(Subscriber.id).where(Subscriber.email_domain == DEMO_DOMAIN))
    ).all()
    churn = {
        23: SubscriberStatus.unsubscribed,
        41: SubscriberStatus.bounced,
        97: SubscriberStatus.complained,
    }
    changes = []
    for i in ids:
        status = next((s for m, s in churn.items() if i % m == 0), SubscriberStatus.active)
        left = status != SubscriberStatus.active
        changes.append(
            {
                "id": i,
                "created_at": now - timedelta(days=i % 120, hours=i % 24),
                "engagement_score": float((i * 37) % 100),
                "last_opened_at": None if i % 4 == 0 else now - timedelta(days=i % 30),
                "status": status.value,
                "status_changed_at": now - timedelta(days=i % 20) if left else None,
                "unsubscribed_at": now - timedelta(days=i % 20)
                if status == SubscriberStatus.unsubscribed
                else None,
            }
        )
    if changes:
        await session.execute(update(Subscriber), changes)  # bulk update by primary key
    for position, topic_id in enumerate(topic_ids):
        await session.execute(
            text("""
            INSERT INTO topic_subscriptions (topic_id, subscriber_id, status, source,
                subscribed_at, created_at, updated_at)
            SELECT :topic, id, 'active', 'demo', created_at, created_at, created_at
            FROM subscribers WHERE email_domain = :domain AND id % :m = 0
            ON CONFLICT (topic_id, subscriber_id) DO NOTHING"""),
            {"domain": DEMO_DOMAIN, "topic": topic_id, "m": position + 2},
        )
    await session.commit()


async def _promotions(session: AsyncSession, actor: str) -> dict[PromotionStatus, int]:
    now = utcnow()
    wanted = {
        PromotionStatus.ended: (
            "Summer Sale",
            now - timedelta(days=150),
            now - timedelta(days=120),
        ),
        PromotionStatus.active: ("Black Friday", now - timedelta(days=2), now + timedelta(days=5)),
        PromotionStatus.draft: (
            "Spring Preview",
            now + timedelta(days=90),
            now + timedelta(days=120),
        ),
    }
    ids: dict[PromotionStatus, int] = {}
    for status, (name, start, end) in wanted.items():
        promotion = await session.scalar(select(Promotion).where(Promotion.name == name))
        if promotion is None:
            data = PromotionCreate(
                name=name, description=f"Demo: {name}", start_at=start, end_at=end
            )
            promotion = await create_promotion(session, data, actor)
            path = {
                PromotionStatus.draft: [],
                PromotionStatus.active: [PromotionStatus.active],
                PromotionStatus.ended: [PromotionStatus.active, PromotionStatus.ended],
            }
            for step in path[status]:
                promotion = await change_promotion_status(session, promotion.id, step, actor)
        ids[status] = promotion.id
    return ids


async def _subscribe_to_promotion(session: AsyncSession, promotion_id: int) -> None:
    await session.execute(
        text("""
        INSERT INTO promotion_subscriptions (subscriber_id, promotion_id, is_active, metadata,
            created_at, updated_at)
        SELECT id, :promotion, TRUE, '{"source": "demo"}', created_at, created_at
        FROM subscribers WHERE email_domain = :domain AND status = 'active' AND id % 5 = 0
        ON CONFLICT (subscriber_id, promotion_id) DO NOTHING"""),
        {"promotion": promotion_id, "domain": DEMO_DOMAIN},
    )
    await session.commit()
