"""Request and response models of the promotions API (seed 004)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from tidings.audience.schemas import Id
from tidings.promotions.models import PromotionStatus
from tidings.schemas import ApiModel, UtcDateTime

PromotionName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
Description = Annotated[str, Field(max_length=10_000)]


class PromotionCreate(ApiModel):
    name: PromotionName
    description: Description = ""
    start_at: UtcDateTime
    end_at: UtcDateTime


class PromotionUpdate(ApiModel):
    """Fields to change. Which ones may change depends on the promotion's status."""

    name: PromotionName | None = None
    description: Description | None = None
    start_at: UtcDateTime | None = None
    end_at: UtcDateTime | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> PromotionUpdate:
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        return self


class StatusChange(ApiModel):
    status: PromotionStatus


class PromotionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    status: PromotionStatus
    start_at: datetime
    end_at: datetime
    activated_at: datetime | None
    ended_at: datetime | None
    created_at: datetime
    updated_at: datetime


class PromotionSubscriptionCreate(ApiModel):
    subscriber_id: Id = Field(
        validation_alias=AliasChoices("user_id", "subscriber_id"),
        description="The subscriber (seed 004 calls it user_id; both names are accepted).",
    )
    promotion_id: Id
    metadata: dict[str, Any] = Field(default_factory=dict)


class PromotionSubscriptionOut(BaseModel):
    id: int
    user_id: int
    subscriber_id: int
    promotion_id: int
    is_active: bool
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    deactivated_at: datetime | None
