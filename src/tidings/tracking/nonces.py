"""One-time webhook tokens (Mailgun's), remembered in the database so that every process of
the fleet refuses a replay; each is forgotten once its time window has passed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from tidings.db.engine import Database
from tidings.db.types import utcnow
from tidings.tracking.models import WebhookNonce


class DatabaseReplayGuard:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def first_use(self, key: str, expires_at: datetime) -> bool:
        async with self._database.sessions() as session:
            await session.execute(delete(WebhookNonce).where(WebhookNonce.expires_at < utcnow()))
            dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
            inserted = await session.scalar(
                dialect.insert(WebhookNonce)
                .values(key=key[:255], expires_at=expires_at)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(WebhookNonce.key)
            )
            await session.commit()
            return inserted is not None
