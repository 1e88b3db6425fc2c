"""Response models of the analytics API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field


class CampaignStatsOut(BaseModel):
    campaign_id: int
    name: str
    status: str
    runs: int
    recipients: int = Field(description="Deliveries written for the campaign's runs.")
    sent: int
    failed: int
    suppressed: int
    queued: int = Field(description="Still to send (queued, sending or waiting to retry).")
    delivered: int = Field(description="Messages a provider reported delivered.")
    opened: int = Field(description="Messages opened by a person (unique per message).")
    opened_total: int = Field(description="Every open recorded, machines' included.")
    opened_by_machines: int = Field(description="Messages only machines opened.")
    clicked: int = Field(description="Messages with a link clicked by a person (unique).")
    clicks_total: int
    bounced: int = Field(description="Messages that bounced (hard, soft or policy).")
    bounced_hard: int
    complained: int
    unsubscribed: int = Field(description="Subscribers who unsubscribed through its messages.")
    delivery_rate: float | None = Field(description="delivered / sent")
    open_rate: float | None = Field(description="opened / sent (people, unique)")
    click_rate: float | None = Field(description="clicked / sent (people, unique)")
    click_to_open_rate: float | None = Field(description="clicked / opened")
    bounce_rate: float | None = Field(description="bounced / sent")
    complaint_rate: float | None = Field(description="complained / sent")
    unsubscribe_rate: float | None = Field(description="unsubscribed / sent")


class HistoryItemOut(BaseModel):
    kind: Literal["delivery", "event"]
    at: datetime = Field(description="When it was sent (delivery) or happened (event).")
    campaign_id: int | None
    delivery_id: int | None
    status: str | None = Field(description="A delivery's status.")
    type: str | None = Field(description="An event's type.")
    source: str | None = None
    provider: str | None = None
    bounce: str | None = None
    reason: str | None = None
    url: str | None = None
    machine: bool | None = None


class TrendPointOut(BaseModel):
    day: date
    sent: int
    opened: int = Field(description="Messages opened by a person that day (unique).")
    clicked: int
    bounced: int
    complained: int
    unsubscribed: int
