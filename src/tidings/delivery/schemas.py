"""Response shapes of the delivery log."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidings.campaigns.models import DeliveryStatus

PENDING = (DeliveryStatus.queued.value, DeliveryStatus.sending.value)


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_id: int
    subscriber_id: int
    status: str
    attempts: int
    next_attempt_at: datetime | None = Field(
        description="When it is tried (again); while sending, when its lease ends. "
        "Null once it is sent, failed or suppressed."
    )
    last_attempt_at: datetime | None
    sent_at: datetime | None
    provider: str | None
    provider_message_id: str | None
    error: str | None
    created_at: datetime

    @model_validator(mode="after")
    def _no_next_attempt_when_finished(self) -> DeliveryOut:
        if self.status not in PENDING:
            self.next_attempt_at = None
        return self
