"""Response shapes of the delivery log."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_id: int
    subscriber_id: int
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    sent_at: datetime | None
    provider: str | None
    provider_message_id: str | None
    error: str | None
    created_at: datetime
