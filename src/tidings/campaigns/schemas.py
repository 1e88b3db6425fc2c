"""Request and response models of the campaigns API.

``CampaignCreate`` takes seed 003's JSON exactly as written (name, type, schedule_time, message,
target_segment, frequency, interval; naive times are UTC) and the fuller shape of our own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from tidings.audience.schemas import Id, Tags
from tidings.campaigns.models import CampaignStatus, Channel
from tidings.campaigns.recurrence import Frequency
from tidings.schemas import ApiModel, UtcDateTime

CampaignName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
Content = Annotated[str, Field(max_length=1_000_000)]
Subject = Annotated[str, Field(max_length=998)]
Address = Annotated[str, Field(min_length=3, max_length=320)]
Interval = Annotated[int, Field(ge=1, le=10_000)]
UtmKey = Literal["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"]
UtmValue = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class CampaignFields(ApiModel):
    """Everything a campaign can say; on create, missing fields take their defaults."""

    name: CampaignName | None = None
    channel: Channel | None = None
    subject: Subject | None = None
    message: Content | None = None  # seed 003: the text sent (HTML made from it for email)
    html: Content | None = None
    text: Content | None = None
    template_id: Id | None = None
    from_name: Annotated[str, Field(max_length=200)] | None = None
    from_email: Address | None = None
    reply_to: Address | None = None
    topic_ids: list[Id] | None = Field(default=None, max_length=100)
    segment_id: Id | None = None
    target_segment: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    promotion_id: Id | None = None
    tags: Tags | None = None
    type: Literal["one_time", "recurring"] | None = None
    schedule_time: UtcDateTime | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    frequency: Frequency | None = None
    interval: Interval | None = None
    rrule: Annotated[str, Field(max_length=1000)] | None = None
    until: UtcDateTime | None = None
    count: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    catch_up: bool | None = None
    track_opens: bool | None = Field(default=None, description="Add an open pixel (default on).")
    track_clicks: bool | None = Field(
        default=None, description="Count clicks on the HTML's links (default on)."
    )
    utm: dict[UtmKey, UtmValue] | None = Field(
        default=None, description="UTM parameters added to every counted link's target."
    )

    def given(self) -> dict[str, Any]:
        """The fields the request named."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class CampaignCreate(CampaignFields):
    name: CampaignName

    @model_validator(mode="after")
    def _recurring_needs_a_rule(self) -> CampaignCreate:
        recurs = self.frequency is not None or self.rrule is not None
        if self.type == "recurring" and not recurs:
            raise ValueError("a recurring campaign needs a frequency (with interval) or an rrule")
        if self.type == "one_time" and recurs:
            raise ValueError("a one_time campaign takes no frequency or rrule")
        return self


class CampaignUpdate(CampaignFields):
    """Fields to change; content cannot change while a campaign is running."""


class Reschedule(ApiModel):
    schedule_time: UtcDateTime


class CampaignOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    origin: str
    channel: Channel
    status: CampaignStatus
    type: Literal["one_time", "recurring"]
    subject: str
    html: str | None
    text: str | None
    template_id: int | None
    from_name: str
    from_email: str | None
    reply_to: str | None
    audience: dict[str, Any]
    schedule_time: datetime | None
    timezone: str
    frequency: str | None
    interval: int
    rrule: str | None
    until: datetime | None
    count: int | None
    catch_up: bool
    track_opens: bool
    track_clicks: bool
    utm: dict[str, str]
    next_run_at: datetime | None
    last_run_at: datetime | None
    runs: int
    recurrence: str
    created_at: datetime
    updated_at: datetime


class CampaignRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    campaign_id: int
    status: str
    scheduled_for: datetime
    started_at: datetime
    materialized_at: datetime | None
    finished_at: datetime | None
    total: int
    queued: int
    sent: int
    failed: int
    suppressed: int
    rate_per_second: float | None = Field(description="Finished deliveries per second.")
    eta_seconds: float | None = Field(description="Seconds to go at that rate (0: finished).")


class TemplateWrite(ApiModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    description: Annotated[str, Field(max_length=10_000)] = ""
    is_layout: bool = False
    subject: Subject = ""
    html: Content = ""
    text: Content | None = None


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    is_layout: bool
    subject: str
    html: str
    text: str | None
    created_at: datetime
    updated_at: datetime


class PreviewRequest(ApiModel):
    subscriber: Annotated[str, Field(min_length=1, max_length=320)] | Id | None = Field(
        default=None, description="Subscriber id or e-mail; the sample subscriber when absent."
    )


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str


class ContentCreate(ApiModel):
    """Seed 000: a content item for one topic, sent at ``scheduled_time`` (UTC)."""

    title: CampaignName
    body: Content
    topic_id: Id
    scheduled_time: UtcDateTime | None = None


class ContentUpdate(ApiModel):
    title: CampaignName | None = None
    body: Content | None = None
    topic_id: Id | None = None
    scheduled_time: UtcDateTime | None = None


class ContentOut(BaseModel):
    id: int
    title: str
    body: str
    topic_id: int | None
    scheduled_time: datetime | None
    sent: bool
    status: CampaignStatus
    created_at: datetime
    updated_at: datetime
