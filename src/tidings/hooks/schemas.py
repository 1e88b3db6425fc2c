"""Request and response shapes of /webhook-endpoints. The signing secret appears in exactly two
responses, creation and rotation; every other view of an endpoint leaves it out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, model_validator

from tidings.hooks.models import HookStatus
from tidings.schemas import ApiModel

Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[\w.-]+$"),
]
Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)]
# Checked against EventType by the service, so the message can list the allowed values.
EventTypes = Annotated[list[Annotated[str, StringConstraints(max_length=32)]], Field(max_length=50)]
EVENT_TYPES_HELP = "Event types to receive (a non-empty subset of the EventType values)."


class EndpointCreate(ApiModel):
    name: Name
    url: Url = Field(description="http(s) URL the events are POSTed to.")
    event_types: EventTypes = Field(description=EVENT_TYPES_HELP)
    enabled: bool = True


class EndpointUpdate(ApiModel):
    """Fields to change; ``enabled: true`` re-enables an endpoint and resumes its deliveries."""

    name: Name | None = None
    url: Url | None = None
    event_types: EventTypes | None = Field(default=None, description=EVENT_TYPES_HELP)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> EndpointUpdate:
        nulled = sorted(n for n in self.model_fields_set if getattr(self, n) is None)
        if nulled:
            raise ValueError(f"{nulled[0]} cannot be null (leave it out to keep it)")
        return self


class EndpointOut(BaseModel):
    id: int
    name: str
    url: str
    event_types: list[str]
    enabled: bool
    consecutive_failures: int
    disabled_reason: str | None = Field(description="Why and since when it is disabled.")
    last_success_at: datetime | None
    last_failure_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(EndpointOut):
    secret: str = Field(description="The signing secret (whsec_...): shown this once only.")


class DeliveryOut(BaseModel):
    id: int
    endpoint_id: int
    event_id: int | None
    event_type: str
    status: HookStatus
    attempts: int
    next_attempt_at: datetime = Field(description="When a pending delivery is tried next.")
    last_status_code: int | None
    last_response: str | None = Field(description="The first KB of the last response body.")
    last_error: str | None
    payload: dict[str, Any]
    created_at: datetime
    delivered_at: datetime | None
