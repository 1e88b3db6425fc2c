"""Request and response models of the audience API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from tidings.audience.fields import (
    check_attributes,
    check_timezone,
    normalize_phone,
    normalize_tag,
    normalize_tags,
)
from tidings.audience.models import OptIn, SubscriberStatus, TopicSubscriptionStatus
from tidings.db.ids import MAX_ID
from tidings.schemas import ApiModel

Id = Annotated[int, Field(ge=1, le=MAX_ID)]


Tag = Annotated[str, Field(max_length=64), AfterValidator(normalize_tag)]
Tags = Annotated[list[Tag], Field(max_length=50), AfterValidator(normalize_tags)]
Timezone = Annotated[str, Field(max_length=64), AfterValidator(check_timezone)]
Phone = Annotated[str, Field(max_length=32), AfterValidator(normalize_phone)]
Attributes = Annotated[dict[str, Any], AfterValidator(check_attributes)]
Email = Annotated[str, Field(min_length=3, max_length=320, examples=["ann@example.com"])]
Name = Annotated[str, Field(max_length=200)]


class SubscriberCreate(ApiModel):
    email: Email
    name: Name = ""
    attributes: Attributes = Field(default_factory=dict)
    tags: Tags = Field(default_factory=list)
    timezone: Timezone | None = None
    phone: Phone | None = None
    topic_ids: list[Id] = Field(
        default_factory=list, max_length=100, description="Subscribe to these topics."
    )


class SubscriberUpdate(ApiModel):
    email: Email | None = None
    name: Name | None = None
    attributes: Attributes | None = None
    tags: Tags | None = None
    timezone: Timezone | None = None
    phone: Phone | None = None
    status: SubscriberStatus | None = None


class SubscriberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str
    attributes: dict[str, Any]
    tags: list[str]
    timezone: str | None
    phone: str | None
    status: SubscriberStatus
    engagement_score: float
    unsubscribed_at: datetime | None
    created_at: datetime
    updated_at: datetime


# Stripped before the length check, so a blank name is refused rather than stored as "".
TopicName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class TopicCreate(ApiModel):
    name: TopicName
    description: Annotated[str, Field(max_length=10_000)] = ""
    is_public: bool = True
    optin: OptIn = OptIn.single


class TopicUpdate(ApiModel):
    name: TopicName | None = None
    description: Annotated[str, Field(max_length=10_000)] | None = None
    is_public: bool | None = None
    optin: OptIn | None = None


class TopicOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    is_public: bool
    optin: OptIn
    created_at: datetime
    updated_at: datetime


class TopicSubscribe(ApiModel):
    """Who to subscribe: a subscriber id or an e-mail address (exactly one)."""

    subscriber_id: Id | None = None
    email: Email | None = None
    source: Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> TopicSubscribe:
        if (self.subscriber_id is None) == (self.email is None):
            raise ValueError("give exactly one of subscriber_id or email")
        return self

    @property
    def subscriber_ref(self) -> int | str:
        return self.subscriber_id if self.subscriber_id is not None else str(self.email)


class TopicSubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    topic_id: int
    subscriber_id: int
    status: TopicSubscriptionStatus
    source: str | None
    subscribed_at: datetime | None
    unsubscribed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SubscriberTopicOut(TopicSubscriptionOut):
    topic: TopicOut


class TopicMemberOut(TopicSubscriptionOut):
    subscriber: SubscriberOut


SEGMENT_RULE_EXAMPLE = {
    "all": [
        {"field": "tag", "op": "eq", "value": "tech"},
        {"field": "attributes.plan", "op": "in", "value": ["pro", "team"]},
        {"field": "engagement_score", "op": "gt", "value": 40},
    ]
}


class SegmentWrite(ApiModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=10_000)] = ""
    rule: dict[str, Any] = Field(
        description="all / any / not of conditions {field, op, value}; see the segments docs.",
        examples=[SEGMENT_RULE_EXAMPLE],
    )


class SegmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    rule: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class SegmentCount(BaseModel):
    segment_id: int
    count: int


class ImportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    source: str
    status: str
    options: dict[str, Any]
    lines_done: int
    inserted: int
    updated: int
    skipped: int
    failed: int
    created_at: datetime
    finished_at: datetime | None
    rejections_url: str = ""


class ImportRejectionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    line: int
    reason: str


class DayCountOut(BaseModel):
    day: date
    joined: int
    left: int


class TopicCountOut(BaseModel):
    topic_id: int
    name: str
    active: int
    pending: int
    unsubscribed: int


class AudienceStatsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    total: int = Field(description="Subscribers of any status but erased.")
    by_status: dict[str, int]
    growth: list[DayCountOut] = Field(description="New and lost subscribers per UTC day.")
    by_topic: list[TopicCountOut]
    by_tag: dict[str, int]
    churn_days: int
    churned: dict[str, int] = Field(description="Unsubscribed/bounced/complained in the window.")
    churn_rate: float = Field(description="churned / (active + churned)")
    generated_at: datetime


class PromotionSubscriptionData(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    promotion_id: int
    is_active: bool
    meta: dict[str, Any] = Field(serialization_alias="metadata")
    created_at: datetime
    deactivated_at: datetime | None


class HistoryEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    actor: str
    action: str


class PersonalEventOut(BaseModel):
    """An open, click, bounce... of the person's mail (tracking events)."""

    model_config = ConfigDict(from_attributes=True)

    type: str
    occurred_at: datetime
    source: str
    campaign_id: int | None
    delivery_id: int | None
    bounce: str | None
    reason: str | None
    url: str | None
    machine: bool
    user_agent: str | None


class PersonalDataOut(BaseModel):
    """Everything tidings holds about one person."""

    model_config = ConfigDict(from_attributes=True)

    subscriber: SubscriberOut
    topic_subscriptions: list[SubscriberTopicOut]
    promotion_subscriptions: list[PromotionSubscriptionData]
    history: list[HistoryEntryOut]
    events: list[PersonalEventOut]
    exported_at: datetime


class DemoOut(BaseModel):
    subscribers: int
    topics: int
    promotions: int
    segments: int


class PublicSignup(ApiModel):
    """A sign-up from a public form: JSON or form fields with these names."""

    model_config = ConfigDict(extra="ignore")

    email: Email
    name: Name = ""
    topic_id: Id


class PublicTopicOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    optin: OptIn
